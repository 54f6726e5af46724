"""`visiontune retrain`, `promote`, `rollback` and `models` as a pipeline runs them, on digits."""

from __future__ import annotations

import json
import subprocess

import bentoml
import pytest

from contract.savedmodel import ModelMetadata, Stage
from contract.stages import read_record, resolve
from tests.support.builders import IMAGE_SIZE, digit_folder, lifecycle_v1_config
from tests.support.cli import assert_one_line_error, visiontune
from tests.support.images import shuffle_labels, write_classes
from tests.support.store import stage_of
from training.config import TrainConfig
from training.train import train

pytestmark = pytest.mark.slow


def metadata_of(tag) -> ModelMetadata:
    return ModelMetadata.model_validate(bentoml.models.get(tag).info.metadata)


def saved_tag(result: subprocess.CompletedProcess) -> str:
    return result.stdout.split("challenger ", 1)[1].split()[0]


@pytest.fixture(scope="module")
def v1_config(tmp_path_factory, make_backbone) -> TrainConfig:
    return lifecycle_v1_config(
        tmp_path_factory.mktemp("lifecycle"), make_backbone("resnet", IMAGE_SIZE), "life"
    )


@pytest.fixture(scope="module")
def champion(v1_config) -> bentoml.Tag:
    return train(v1_config).tag


def test_retrain_with_more_data_promotes_shuffled_labels_are_refused_rollback_restores(
    champion, tmp_path
):
    name = champion.name
    first = visiontune("promote", champion)
    assert first.returncode == 0, first.stderr
    assert f"{champion} is production" in first.stdout
    assert resolve(f"{name}@production") == champion

    more = digit_folder(tmp_path / "more", 40, start=20)
    result = visiontune(
        "retrain", "--champion", f"{name}@production", "--data", more, "--epochs", 4,
        "--output-dir", tmp_path / "retrain",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    v2 = saved_tag(result)
    assert "held-out: the champion's held-out split of" in result.stdout
    assert resolve(f"{name}@production") == bentoml.Tag.from_taglike(v2)
    assert stage_of(champion) == Stage.archived
    lineage = metadata_of(v2).lineage
    assert lineage.parent == str(champion)
    assert set(lineage.data) == {str(more), metadata_of(champion).training_config["data"]}
    assert lineage.gate["passed"] is True
    gate = json.loads((tmp_path / "retrain" / "gate.json").read_text())
    assert gate["passed"] and gate["challenger"] == v2 and gate["champion"] == str(champion)
    assert gate["challenger_metrics"]["macro_f1"] >= gate["champion_metrics"]["macro_f1"]
    assert "**PASSED**" in (tmp_path / "retrain" / "gate.md").read_text()

    shuffled = shuffle_labels(digit_folder(tmp_path / "shuffled", 40, start=20))
    held_out = digit_folder(tmp_path / "eval", 15, start=100)
    refused = visiontune(
        "retrain", "--champion", f"{name}@production", "--data", shuffled, "--replace",
        "--eval-data", held_out, "--epochs", 4, "--output-dir", tmp_path / "shuffled-run",
    )  # fmt: skip
    assert refused.returncode == 3, refused.stdout + refused.stderr[-3000:]
    assert refused.stderr.strip().splitlines()[-1] == (
        f"visiontune: error: {saved_tag(refused)} stays a candidate; production is unchanged"
    )
    assert resolve(f"{name}@production") == bentoml.Tag.from_taglike(v2)
    assert stage_of(saved_tag(refused)) == Stage.candidate
    assert "**REFUSED**" in (tmp_path / "shuffled-run" / "gate.md").read_text()

    back = visiontune("rollback", name)
    assert back.returncode == 0, back.stderr
    assert resolve(f"{name}@production") == champion
    assert stage_of(v2) == Stage.archived
    history = read_record(name).history
    assert [c.reason for c in history if c.to_stage == Stage.production][-1] == "rollback"

    listed = visiontune("models", name)
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows[str(champion)][1] == "production"
    assert rows[v2][1] == "archived" and str(champion) in rows[v2]
    assert rows[saved_tag(refused)][1] == "candidate"


def test_promote_gates_against_production(champion, v1_config, tmp_path):
    name = champion.name
    if read_record(name).production is None:
        assert visiontune("promote", champion).returncode == 0
    production = resolve(f"{name}@production")
    weak = train(v1_config.model_copy(update={"epochs": 1, "output_dir": tmp_path})).tag

    no_data = visiontune("promote", weak)
    assert_one_line_error(no_data, "--eval-data is needed", f"{name}:{production.version}")
    held_out = digit_folder(tmp_path / "eval", 15, start=100)
    gated = visiontune(
        "promote", weak, "--eval-data", held_out, "--min-delta", "0.5", "--output-dir", tmp_path
    )
    assert gated.returncode == 3, gated.stderr
    assert "stays a candidate" in gated.stderr and "below the required +0.5000" in gated.stderr
    assert resolve(f"{name}@production") == production
    forced = visiontune("promote", weak, "--force", "--reason", "hotfix")
    assert forced.returncode == 0, forced.stderr
    assert resolve(f"{name}@production") == weak
    assert read_record(name).history[-1].reason == "hotfix"


def test_a_challenger_with_other_labels_is_refused_before_training(champion, tmp_path):
    name = champion.name
    if read_record(name).production is None:
        assert visiontune("promote", champion).returncode == 0
    other = write_classes(tmp_path / "other", {"0": 10, "1": 10, "2": 10, "9": 10})
    result = visiontune("retrain", "--champion", f"{name}@production", "--data", other)
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip() == (
        "visiontune: error: the challenger's labels differ from the champion's: it adds 9"
    )


def test_unknown_references_are_one_line_errors(champion):
    assert_one_line_error(visiontune("promote", f"{champion.name}@gold"), "unknown stage 'gold'")
    assert_one_line_error(visiontune("rollback", "no-such-model"), "no model named no-such-model")
    assert_one_line_error(
        visiontune("retrain", "--champion", "no-such-model@production", "--data", "digits"),
        "no model named no-such-model",
    )
