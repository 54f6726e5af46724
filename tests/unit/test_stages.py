"""The stage registry in a real BentoML store: resolving references, promote, rollback, faults."""

from __future__ import annotations

import json
import os

import bentoml
import pytest

from contract.savedmodel import Stage
from contract.stages import (
    STAGES_FILENAME,
    StageError,
    name_folder,
    read_record,
    recorded_stage,
    resolve,
)
from tests.support.builders import metadata, unique_name
from tests.support.store import stage_of
from training.model import create_model
from training.store import list_models, save_model
from visiontune.lifecycle import registry
from visiontune.lifecycle.registry import RegistryError

LABELS = ["3", "5", "8"]


@pytest.fixture(scope="module")
def tiny(make_backbone):
    return create_model(str(make_backbone("resnet", 16)), LABELS, image_size=16)


@pytest.fixture
def versions(tiny):
    """Three stored versions of a fresh name, oldest first (all candidates)."""
    model, preprocessing = tiny
    name = unique_name("stages")
    return [save_model(model, preprocessing, metadata(), name=name) for _ in range(3)]


def productions(name: str) -> list[str]:
    record = read_record(name)
    return [v for v, stage in record.stages.items() if stage == Stage.production]


def test_references_resolve_to_exact_tags(versions):
    first, second, third = versions
    name = first.name
    assert resolve(str(second)) == second
    assert resolve(f"{name}:latest") == third
    assert resolve(name) == third
    assert resolve(f"{name}@candidate") == third
    assert stage_of(first) == Stage.candidate
    assert recorded_stage(first) is None  # nothing of this name promoted yet

    registry.promote(str(first), "first")
    assert resolve(f"{name}@production") == first
    assert stage_of(first) == Stage.production
    assert recorded_stage(first) == Stage.production
    assert recorded_stage(third) == Stage.candidate
    assert resolve(f"{name}@candidate") == third


def test_unknown_name_stage_and_no_production_are_one_line_errors(versions):
    name = versions[0].name
    with pytest.raises(StageError, match="no model named nothing-here in the store"):
        resolve("nothing-here@production")
    with pytest.raises(StageError, match="no model nothing-here:v1 in the store"):
        resolve("nothing-here:v1")
    with pytest.raises(StageError, match="needs a name"):
        resolve("@production")
    with pytest.raises(StageError, match="not a model name"):
        resolve("Bad Name@production")
    with pytest.raises(StageError, match=r"unknown stage 'prod'.*candidate, production, archived"):
        resolve(f"{name}@prod")
    message = f"{name} has no production model; promote one: visiontune promote {name}:VERSION"
    with pytest.raises(StageError, match=message):
        resolve(f"{name}@production")
    with pytest.raises(StageError, match="no archived model"):
        resolve(f"{name}@archived")


def test_promote_archives_the_old_production_and_records_history(versions):
    first, second, _ = versions
    name = first.name
    registry.promote(str(first), "first")
    change = registry.promote(str(second), "better", gate={"passed": True})

    record = read_record(name)
    assert record.production == second.version
    assert productions(name) == [second.version]
    assert record.stage(first.version) == Stage.archived
    assert resolve(f"{name}@archived") == first
    assert change.previous_production == first.version
    assert [(c.version, c.from_stage, c.to_stage) for c in record.history] == [
        (first.version, "candidate", "production"),
        (first.version, "production", "archived"),
        (second.version, "candidate", "production"),
    ]
    assert record.history[-1].gate == {"passed": True}
    assert record.promoted_at(second.version) == change.when
    with pytest.raises(RegistryError, match="already production"):
        registry.promote(str(second), "again")


def test_rollback_walks_back_through_earlier_productions(versions):
    first, second, third = versions
    name = first.name
    with pytest.raises(RegistryError, match="no production model"):
        registry.rollback(name)
    for tag in versions:
        registry.promote(str(tag), "promoted")

    assert registry.rollback_target(name) == second
    with pytest.raises(RegistryError, match="changed meanwhile"):
        registry.rollback(name, expected_target=first.version)
    change = registry.rollback(name, expected_target=second.version)
    assert (change.version, change.previous_production) == (second.version, third.version)
    assert resolve(f"{name}@production") == second
    assert read_record(name).stage(third.version) == Stage.archived
    registry.rollback(name)
    assert resolve(f"{name}@production") == first
    with pytest.raises(RegistryError, match="no earlier production model"):
        registry.rollback(name)
    assert productions(name) == [first.version]


def test_rollback_skips_versions_deleted_from_the_store(versions):
    first, second, third = versions
    for tag in versions:
        registry.promote(str(tag), "promoted")
    bentoml.models.delete(second)
    registry.rollback(first.name)
    assert resolve(f"{first.name}@production") == first


def test_a_stale_gate_is_not_applied(versions):
    first, second, third = versions
    registry.promote(str(first), "first")
    registry.promote(str(second), "second")
    with pytest.raises(RegistryError, match="but production is"):
        registry.promote(str(third), "gated vs first", expected_production=first.version)
    assert resolve(f"{first.name}@production") == second


def test_production_deleted_from_the_store_says_so(versions):
    first = versions[0]
    registry.promote(str(first), "first")
    bentoml.models.delete(first)
    with pytest.raises(StageError, match="no longer in the store; promote another"):
        resolve(f"{first.name}@production")


@pytest.mark.parametrize("step", ["_crown", "_write"])
def test_ctrl_c_mid_promotion_leaves_the_registry_as_it_was(versions, monkeypatch, step):
    first, second, _ = versions
    name = first.name
    registry.promote(str(first), "first")
    before = (name_folder(name) / STAGES_FILENAME).read_text()

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if step == "_write":  # the new registry is written, but not yet moved over the old one
        monkeypatch.setattr(registry.os, "replace", interrupt)
    else:  # the old production is archived in memory, the new one not yet crowned
        monkeypatch.setattr(registry, step, interrupt)
    with pytest.raises(KeyboardInterrupt):
        registry.promote(str(second), "interrupted")
    monkeypatch.undo()

    assert (name_folder(name) / STAGES_FILENAME).read_text() == before
    assert productions(name) == [first.version]
    assert sorted(p.name for p in name_folder(name).iterdir() if not p.is_dir()) == [
        "latest",
        "visiontune-stages.json",
        "visiontune-stages.lock",
    ]
    registry.promote(str(second), "again")
    assert resolve(f"{name}@production") == second


def test_the_store_lists_only_models_beside_the_registry(versions):
    first = versions[0]
    registry.promote(str(first), "first")
    folder = name_folder(first.name)
    assert (folder / STAGES_FILENAME).is_file()
    assert json.loads((folder / STAGES_FILENAME).read_text())["production"] == first.version
    assert sorted(m.tag for m in bentoml.models.list(first.name)) == sorted(versions)
    assert {m.tag for m in list_models(first.name)} == set(versions)
    assert any(m.tag == first for m in bentoml.models.list())
    assert not os.path.exists(folder / f".{STAGES_FILENAME}.tmp")
