"""The promotion gate: a challenger replaces the champion only if it is better on the same images.

Both models score the same held-out images with their calibrated predictors
(``contract.predictor.Predictor``, as served). The challenger wins only if

- it has the champion's labels (else it is refused, the difference named),
- its main metric (``macro_f1`` by default) is at least ``min_delta`` above the
  champion's (``min_delta`` 0: at least as good), and
- no class's F1 drops by more than ``max_class_drop`` below the champion's.

The comparison is written to the run folder as ``gate.json`` and ``gate.md``.

Live evidence joins the same gate at promotion (:class:`LiveRules`): images
captured from live traffic and labelled (``visiontune capture import``) are
scored like the held-out set, under the same rules, and the challenger, run as
the serving model's shadow, must have agreed with it on at least
``min_shadow_agreement`` of ``min_shadow_images`` live images or more
(:func:`check_agreement`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from contract.predictor import Predictor
from contract.savedmodel import Metrics

GATE_JSON = "gate.json"
GATE_MARKDOWN = "gate.md"


class Refused(Exception):
    """The gate said no (or can't compare the two models); exit code 3 at the CLI."""


class GateRules(BaseModel):
    """What a challenger must do to replace the champion (the `--metric` ... flags)."""

    metric: Literal["macro_f1", "accuracy"] = Field(
        "macro_f1", description="Main metric the challenger must improve."
    )
    min_delta: float = Field(
        0.0,
        ge=-1,
        le=1,
        description="How much higher the challenger's main metric must be than the champion's "
        "(0: at least as good; raise it to ask for a margin).",
    )
    max_class_drop: float = Field(
        0.05, ge=0, le=1, description="Largest drop of any one class's F1 the gate accepts."
    )


class LiveRules(BaseModel):
    """What live traffic must show before a challenger is promoted (the `promote` flags)."""

    min_shadow_agreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Require the challenger, run as the production model's shadow "
        "(VISIONTUNE_SHADOW), to have given its top-1 label on at least this share of live "
        "images (evidence from --capture or --metrics).",
    )
    min_shadow_images: int = Field(
        100, ge=1, description="Fewest live images the shadow agreement must rest on."
    )


class AgreementCheck(BaseModel):
    """The shadow-agreement part of a verdict."""

    passed: bool
    reason: str
    compared: int
    agreed: int
    source: str


@dataclass
class Contender:
    """A model in the comparison: its tag, its labels in id order, its calibrated predictor."""

    tag: str
    labels: list[str]
    predictor: Predictor


class Verdict(BaseModel):
    """The gate's decision and everything it was based on."""

    passed: bool
    reason: str
    champion: str
    challenger: str
    held_out: str = Field(description="Which images both models were scored on.")
    rules: GateRules
    champion_metrics: Metrics
    challenger_metrics: Metrics
    delta: float = Field(description="Challenger's main metric minus the champion's.")
    class_drops: dict[str, float] = Field(
        description="Per class: champion's F1 minus the challenger's (positive: a drop)."
    )


def check_labels(champion: list[str], challenger: list[str]) -> None:
    """Refuse a challenger whose labels are not the champion's, naming the difference."""
    added = [label for label in challenger if label not in champion]
    missing = [label for label in champion if label not in challenger]
    if added or missing:
        parts = []
        if added:
            parts.append(f"adds {', '.join(added)}")
        if missing:
            parts.append(f"lacks {', '.join(missing)}")
        raise Refused(
            f"the challenger's labels differ from the champion's: it {' and '.join(parts)}"
        )


def compare(
    champion: Contender,
    challenger: Contender,
    examples: list,
    held_out: str,
    rules: GateRules,
    batch_size: int = 32,
) -> Verdict:
    """Score both on ``examples`` (label ids in the champion's order) and judge."""
    from training.evaluate import evaluate_predictor

    check_labels(champion.labels, challenger.labels)
    remap = [challenger.labels.index(label) for label in champion.labels]
    challenger_examples = [(source, remap[label]) for source, label in examples]
    champion_metrics = evaluate_predictor(
        champion.predictor, examples, champion.labels, batch_size
    ).metrics
    challenger_metrics = evaluate_predictor(
        challenger.predictor, challenger_examples, challenger.labels, batch_size
    ).metrics
    return judge(
        champion.tag, challenger.tag, champion_metrics, challenger_metrics, held_out, rules
    )


def judge(
    champion: str,
    challenger: str,
    champion_metrics: Metrics,
    challenger_metrics: Metrics,
    held_out: str,
    rules: GateRules,
) -> Verdict:
    """The verdict from two models' metrics on the same images."""
    delta = getattr(challenger_metrics, rules.metric) - getattr(champion_metrics, rules.metric)
    drops = {
        label: f1 - challenger_metrics.per_class_f1[label]
        for label, f1 in champion_metrics.per_class_f1.items()
    }
    worst = max(drops, key=drops.get)
    if delta < rules.min_delta:
        passed = False
        reason = (
            f"{rules.metric} {_signed(delta)} vs the champion, below the required "
            f"{_signed(rules.min_delta)}"
        )
    elif drops[worst] > rules.max_class_drop:
        passed = False
        reason = (
            f"F1 of class {worst} drops by {drops[worst]:.4f}, more than the allowed "
            f"{rules.max_class_drop:.4f}"
        )
    else:
        passed = True
        reason = (
            f"{rules.metric} {_signed(delta)} vs the champion (required "
            f"{_signed(rules.min_delta)}); largest class F1 drop {max(drops[worst], 0):.4f} "
            f"(allowed {rules.max_class_drop:.4f})"
        )
    return Verdict(
        passed=passed,
        reason=reason,
        champion=champion,
        challenger=challenger,
        held_out=held_out,
        rules=rules,
        champion_metrics=champion_metrics,
        challenger_metrics=challenger_metrics,
        delta=delta,
        class_drops=drops,
    )


def check_agreement(
    champion: str, challenger: str, rules: LiveRules, evidence: list, source: str
) -> AgreementCheck:
    """Whether ``challenger`` shadowing ``champion`` agreed often enough; ``evidence`` holds
    ``visiontune.lifecycle.shadow.ShadowStats`` (the pair is looked for there)."""
    (pair,) = [s for s in evidence if (s.model, s.shadow) == (champion, challenger)] or [None]
    compared, agreed = (pair.compared, pair.agreed) if pair else (0, 0)
    required = rules.min_shadow_agreement
    if compared < rules.min_shadow_images:
        passed = False
        reason = (
            f"{challenger} answered {compared} live images as the shadow of {champion}, fewer "
            f"than the {rules.min_shadow_images} required (--min-shadow-images)"
        )
    else:
        agreement = agreed / compared
        passed = agreement >= required
        reason = (
            f"shadow agreement {agreement:.4f} on {compared} live images "
            f"({'at least' if passed else 'below'} the required {required:.4f})"
        )
    return AgreementCheck(
        passed=passed, reason=reason, compared=compared, agreed=agreed, source=source
    )


def write_verdict(run_dir: Path, verdict: Verdict) -> Path:
    """``gate.json`` and ``gate.md`` in ``run_dir``; returns the Markdown file."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / GATE_JSON).write_text(json.dumps(verdict.model_dump(mode="json"), indent=2))
    markdown = run_dir / GATE_MARKDOWN
    markdown.write_text(_markdown(verdict))
    return markdown


def _markdown(verdict: Verdict) -> str:
    champion, challenger = verdict.champion_metrics, verdict.challenger_metrics
    rows = [
        ("accuracy", champion.accuracy, challenger.accuracy),
        ("macro_f1", champion.macro_f1, challenger.macro_f1),
        ("ece", champion.ece, challenger.ece),
        ("nll", champion.nll, challenger.nll),
        *(
            (f"F1 {label}", f1, challenger.per_class_f1[label])
            for label, f1 in champion.per_class_f1.items()
        ),
    ]
    lines = [
        f"# Gate: {verdict.challenger} vs {verdict.champion}",
        "",
        f"**{'PASSED' if verdict.passed else 'REFUSED'}**: {verdict.reason}.",
        "",
        f"Held-out images ({champion.n}): {verdict.held_out}.",
        "",
        "| metric | champion | challenger | change |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {name} | {a:.4f} | {b:.4f} | {_signed(b - a)} |" for name, a, b in rows),
        "",
    ]
    return "\n".join(lines)


def _signed(value: float) -> str:
    return f"{value:+.4f}"
