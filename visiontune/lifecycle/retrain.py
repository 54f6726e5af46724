"""Retraining: a challenger trained like the champion on new data, gated, promoted if better.

The challenger starts from the champion's recorded training config (flags
override it) and trains on the new images merged with the champion's recorded
data (``merge``) or on the new images alone (``replace``). Each recorded data
source is split again with the champion's own config, so the champion's
held-out images stay held out. Before it is saved, champion and challenger are
scored on the same held-out images: ``--eval-data`` when given, otherwise the
champion's recorded held-out split plus one from the new data. The challenger
is stored (a ``candidate``) with its lineage: parent, data fingerprints, the
held-out set and the gate's verdict; it is promoted only if the gate passes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import bentoml

from contract.capture import captured_ids
from contract.predictor import Predictor
from contract.savedmodel import Lineage, ModelMetadata, production_ref
from contract.stages import Change, read_record, resolve
from training.config import STRATEGY_FIELDS
from visiontune.lifecycle import registry
from visiontune.lifecycle.gate import (
    Contender,
    GateRules,
    Verdict,
    check_labels,
    compare,
    write_verdict,
)
from visiontune.lifecycle.promotion import contender, held_out_examples

# Fields of the champion's recorded config a retrain never reuses as they were
# (workers: the loader processes suit the machine that trained, not this one).
NOT_REUSED = ("data", "output_dir", "resume", "workers")


@dataclass
class RetrainRequest:
    """What `visiontune retrain` was asked to do."""

    data: str
    champion: str
    mode: Literal["merge", "replace"] = "merge"
    overrides: dict | None = None
    eval_data: str | None = None
    rules: GateRules | None = None
    promote: bool = True
    run_dir: Path | None = None


@dataclass
class RetrainResult:
    champion: bentoml.Tag
    challenger: bentoml.Tag
    verdict: Verdict
    change: Change | None  # the promotion, None when refused or not asked for
    run_dir: Path


@dataclass
class HeldOut:
    examples: list
    description: str


def retrain(request: RetrainRequest) -> RetrainResult:
    """Train, gate and (if asked and it passes) promote a challenger to ``request.champion``."""
    from training.config import TrainConfig
    from training.train import train

    champion_tag = resolve(request.champion)
    if request.promote:
        _check_champion_serves(champion_tag)
    champion_meta = ModelMetadata.model_validate(bentoml.models.get(champion_tag).info.metadata)
    recorded = _recorded_config(champion_meta)
    config = TrainConfig.model_validate(
        {
            **_without_other_strategy_fields(recorded, request.overrides or {}),
            "data": request.data,
            "name": champion_tag.name,
            "output_dir": request.run_dir or _default_run_dir(champion_tag),
        }
    )
    data, held_out, fingerprints = _challenger_data(request, champion_meta, recorded, config)
    champion = contender(champion_tag)
    rules = request.rules or GateRules()
    verdicts: list[Verdict] = []

    def gate_then_record(model, preprocessing, metadata: ModelMetadata) -> ModelMetadata:
        challenger = Contender(
            tag=f"{champion_tag.name} (this run)",
            labels=metadata.labels,
            predictor=Predictor(model, preprocessing, metadata.temperature),
        )
        verdict = compare(
            champion, challenger, held_out.examples, held_out.description, rules, config.batch_size
        )
        verdicts.append(verdict)
        lineage = Lineage(
            parent=str(champion_tag),
            data=fingerprints,
            held_out=held_out.description,
            gate=verdict.model_dump(mode="json"),
            captured={source: ids for source in fingerprints if (ids := captured_ids(source))},
        )
        return metadata.model_copy(update={"lineage": lineage})

    result = train(config, data=data, before_save=gate_then_record)
    verdict = verdicts[0].model_copy(update={"challenger": str(result.tag)})
    write_verdict(config.run_dir, verdict)
    change = None
    if verdict.passed and request.promote:
        change = registry.promote(
            str(result.tag),
            f"retrained from {champion_tag}: passed the gate",
            gate=verdict.model_dump(mode="json"),
            expected_production=str(champion_tag.version),
        )
    return RetrainResult(champion_tag, result.tag, verdict, change, config.run_dir)


def _check_champion_serves(champion: bentoml.Tag) -> None:
    """A challenger may only replace production if it was compared with production."""
    production = read_record(champion.name).production
    if production != champion.version:
        now = f"{champion.name}:{production}" if production else "none"
        raise ValueError(
            f"--champion {champion} is not the production model ({now}); compare with "
            f"{production_ref(champion.name)}, or add --no-promote"
        )


def _recorded_config(metadata: ModelMetadata) -> dict:
    """The champion's training config as TrainConfig fields (resolved defaults dropped)."""
    from training.config import TrainConfig

    return {
        key: value
        for key, value in metadata.training_config.items()
        if key in TrainConfig.model_fields and key not in NOT_REUSED
    }


def _without_other_strategy_fields(recorded: dict, overrides: dict) -> dict:
    """Recorded values overridden by flags, less the recorded knobs of a strategy no longer
    used (``--strategy full`` over a champion trained with ``partial`` drops its blocks)."""
    values = {**recorded, **overrides}
    for field, strategy in STRATEGY_FIELDS.items():
        if values.get("strategy") != strategy and field not in overrides:
            values.pop(field, None)
    return values


def _default_run_dir(champion: bentoml.Tag) -> Path:
    from datetime import UTC, datetime

    return Path("runs") / champion.name / f"retrain-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def _champion_sources(metadata: ModelMetadata) -> list[str]:
    """The data the champion was trained on: every source of a retrained one."""
    if metadata.lineage and metadata.lineage.data:
        return list(metadata.lineage.data)
    return [metadata.training_config["data"]]


def _challenger_data(request: RetrainRequest, champion: ModelMetadata, recorded: dict, config):
    """The challenger's training splits, the held-out images, and each source's fingerprint."""
    from training.config import TrainConfig
    from training.data import DataSplits, load_data

    new = load_data(config)
    kept = champion.labels if request.mode == "merge" else []
    check_labels(champion.labels, [*kept, *(label for label in new.labels if label not in kept)])
    old = []
    if request.mode == "merge" or request.eval_data is None:
        for source in _champion_sources(champion):
            split = load_data(TrainConfig.model_validate({**recorded, "data": source}))
            old.append((source, _in_order(split, champion.labels)))
    new = _in_order(new, champion.labels)
    trained_on = [(request.data, new)] + (old if request.mode == "merge" else [])
    held_out = _held_out(request, champion.labels, old, new, config.batch_size)
    fingerprints = {source: split.fingerprint for source, split in trained_on}
    data = DataSplits(
        labels=champion.labels,
        train=[e for _, split in trained_on for e in split.train],
        val=[e for _, split in trained_on for e in split.val],
        test=held_out.examples,
        fingerprint=_combined(fingerprints),
        skipped=[s for _, split in trained_on for s in split.skipped],
    )
    return data, held_out, fingerprints


def _held_out(request: RetrainRequest, labels, old, new, batch_size: int) -> HeldOut:
    if request.eval_data is not None:
        examples = held_out_examples(request.eval_data, labels, batch_size)
        return HeldOut(examples, f"--eval-data {request.eval_data} ({len(examples)} images)")
    parts, examples = [], []
    for source, split in old:
        if split.test:
            examples += split.test
            parts.append(f"the champion's held-out split of {source} ({len(split.test)} images)")
    if new.test:
        examples += new.test
        parts.append(f"a held-out split of {request.data} ({len(new.test)} images)")
    if not examples:
        raise ValueError(
            "no held-out images to compare champion and challenger on: the champion recorded "
            "none (--test-fraction 0); give --eval-data or a --test-fraction above 0"
        )
    return HeldOut(examples, " + ".join(parts))


def _in_order(split, labels: list[str]):
    """``split`` with label ids in ``labels``' order (the champion's)."""
    remap = {i: labels.index(name) for i, name in enumerate(split.labels)}

    def mapped(examples):
        return [(source, remap[label]) for source, label in examples or []]

    split.train, split.val = mapped(split.train), mapped(split.val)
    split.test = mapped(split.test) or None
    split.labels = labels
    return split


def _combined(fingerprints: dict[str, str]) -> str:
    text = json.dumps(sorted(fingerprints.values()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
