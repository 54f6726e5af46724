"""Promoting a stored model: the gate against the current production model, then the registry.

The first model of a name to be promoted has no champion and needs no gate.
Otherwise the challenger must pass :mod:`visiontune.lifecycle.gate` on the same
held-out images as the champion, unless forced. Live evidence
(:class:`LiveEvidence`) adds to that gate: labelled captures scored like the
held-out images, and the challenger's agreement with the champion while it ran
as its shadow. Every check asked for must pass. The registry change itself is
:func:`visiontune.lifecycle.registry.promote` (atomic, locked).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bentoml

from contract.stages import Change, read_record, resolve
from visiontune.lifecycle import registry
from visiontune.lifecycle.gate import (
    AgreementCheck,
    Contender,
    GateRules,
    LiveRules,
    Verdict,
    check_agreement,
    compare,
    write_verdict,
)

LABELLED_RUN = "labelled-capture"  # the run sub-folder of the labelled captures' gate


@dataclass
class LiveEvidence:
    """What live traffic says: labelled captures, and where the shadow's statistics are."""

    rules: LiveRules
    labelled: str | None = None  # a folder `visiontune capture import` wrote
    shadow_stats: Callable[[], list] | None = None  # visiontune.lifecycle.shadow's figures
    source: str = ""  # where those figures come from


@dataclass
class Promotion:
    """What ``promote`` did: the registry change (None if refused) and every check's verdict."""

    tag: bentoml.Tag
    change: Change | None
    verdict: Verdict | None
    labelled: Verdict | None = None
    agreement: AgreementCheck | None = None

    @property
    def checks(self) -> list[Verdict | AgreementCheck]:
        return [c for c in (self.verdict, self.labelled, self.agreement) if c is not None]


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
    live: LiveEvidence | None = None,
) -> Promotion:
    """Gate ``ref`` against its name's production model, and promote it if it passes.

    Needs ``eval_data`` or live evidence unless there is no production model yet or
    ``force`` is set; with ``force`` the checks asked for still run and are recorded.
    """
    tag = resolve(ref)
    champion = read_record(tag.name).production
    if champion is None:
        change = registry.promote(str(tag), reason or "first production model of its name")
        return Promotion(tag, change, None)
    live = live or LiveEvidence(LiveRules())
    _check_asked(tag, champion, eval_data, live, force)
    promotion = Promotion(tag, None, None)
    if eval_data is not None or live.labelled is not None:
        champion_model, challenger = contender(bentoml.Tag(tag.name, champion)), contender(tag)
    if eval_data is not None:
        examples = held_out_examples(eval_data, champion_model.labels)
        promotion.verdict = compare(
            champion_model, challenger, examples, f"--eval-data {eval_data}", rules
        )
        write_verdict(run_dir, promotion.verdict)
    if live.labelled is not None:
        examples = held_out_examples(live.labelled, champion_model.labels)
        described = f"labelled captures {live.labelled} ({len(examples)} images)"
        promotion.labelled = compare(champion_model, challenger, examples, described, rules)
        write_verdict(run_dir / LABELLED_RUN, promotion.labelled)
    if live.rules.min_shadow_agreement is not None:
        promotion.agreement = check_agreement(
            f"{tag.name}:{champion}", str(tag), live.rules, live.shadow_stats(), live.source
        )
    passed = all(check.passed for check in promotion.checks)
    if not passed and not force:
        return promotion
    why = reason or ("forced past the gate" if force and not passed else "passed the gate")
    promotion.change = registry.promote(
        str(tag), why, gate=_recorded(promotion), expected_production=champion
    )
    return promotion


def _check_asked(tag, champion: str, eval_data, live: LiveEvidence, force: bool) -> None:
    """Some check must be asked for (or ``force``), and each one needs its evidence."""
    asks_agreement = live.rules.min_shadow_agreement is not None
    if asks_agreement and live.shadow_stats is None:
        raise ValueError("--min-shadow-agreement needs its evidence: --capture or --metrics")
    if eval_data is None and live.labelled is None and not asks_agreement and not force:
        raise ValueError(
            f"--eval-data is needed to compare {tag} with the production model "
            f"{tag.name}:{champion} (or live evidence: --labelled-capture, "
            "--min-shadow-agreement; or --force to promote without the gate)"
        )


def _recorded(promotion: Promotion) -> dict | None:
    """The verdicts as the stage history keeps them: the held-out verdict's fields, and the
    live evidence under ``live``."""
    gate = promotion.verdict.model_dump(mode="json") if promotion.verdict else {}
    live = {}
    if promotion.labelled is not None:
        live["labelled_capture"] = promotion.labelled.model_dump(mode="json")
    if promotion.agreement is not None:
        live["shadow_agreement"] = promotion.agreement.model_dump(mode="json")
    if live:
        gate["live"] = live
    return gate or None
