"""Promoting a stored model: the gate against the current production model, then the registry.

The first model of a name to be promoted has no champion and needs no gate.
Otherwise the challenger must pass :mod:`visiontune.lifecycle.gate` on the same
held-out images as the champion, unless forced. The registry change itself is
:func:`visiontune.lifecycle.registry.promote` (atomic, locked).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bentoml

from contract.stages import Change, read_record, resolve
from visiontune.lifecycle import registry
from visiontune.lifecycle.gate import Contender, GateRules, Verdict, compare, write_verdict


@dataclass
class Promotion:
    """What ``promote`` did: the registry change (None if refused) and the gate's verdict."""

    tag: bentoml.Tag
    change: Change | None
    verdict: Verdict | None


def contender(tag: bentoml.Tag | str) -> Contender:
    """A stored model loaded for the gate (its calibrated predictor, as served)."""
    from training.store import load_predictor

    predictor, metadata, resolved = load_predictor(str(tag))
    return Contender(tag=str(resolved), labels=metadata.labels, predictor=predictor)


def held_out_examples(eval_data: str, labels: list[str], batch_size: int = 32) -> list:
    """``--eval-data`` as labelled examples in ``labels``' order (its test split if it has one)."""
    from training.config import TrainConfig
    from training.data import load_labelled

    config = TrainConfig(data=eval_data, backbone="-", batch_size=batch_size)
    return load_labelled(config, labels)


def promote_with_gate(
    ref: str,
    *,
    eval_data: str | None,
    rules: GateRules,
    run_dir: Path,
    force: bool = False,
    reason: str | None = None,
) -> Promotion:
    """Gate ``ref`` against its name's production model, and promote it if it passes.

    Needs ``eval_data`` unless there is no production model yet or ``force`` is set;
    with ``force`` and ``eval_data`` the gate still runs and its verdict is recorded.
    """
    tag = resolve(ref)
    champion = read_record(tag.name).production
    if champion is None:
        change = registry.promote(str(tag), reason or "first production model of its name")
        return Promotion(tag, change, None)
    if eval_data is None and not force:
        raise ValueError(
            f"--eval-data is needed to compare {tag} with the production model "
            f"{tag.name}:{champion} (or --force to promote without the gate)"
        )
    verdict = None
    if eval_data is not None:
        champion_model = contender(bentoml.Tag(tag.name, champion))
        examples = held_out_examples(eval_data, champion_model.labels)
        verdict = compare(
            champion_model, contender(tag), examples, f"--eval-data {eval_data}", rules
        )
        write_verdict(run_dir, verdict)
        if not verdict.passed and not force:
            return Promotion(tag, None, verdict)
    why = reason or (
        "forced past the gate" if force and not (verdict and verdict.passed) else "passed the gate"
    )
    change = registry.promote(
        str(tag),
        why,
        gate=verdict.model_dump(mode="json") if verdict else None,
        expected_production=champion,
    )
    return Promotion(tag, change, verdict)
