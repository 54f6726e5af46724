"""`visiontune promote TAG`: make a stored model production if it beats the current one.

The gate compares it with the production model on held-out images
(``--eval-data``) and, with live evidence, on labelled captures
(``--labelled-capture``) and by its agreement with production while it ran as
the shadow (``--min-shadow-agreement`` with ``--capture`` or ``--metrics``).
Exit 0 promoted, 3 refused by the gate (nothing changed), 2 usage or data error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visiontune.commands.shadow import add_source_arguments, shadow_stats
from visiontune.flags import add_config_flags, config_values, quiet_transformers
from visiontune.lifecycle.gate import GateRules, LiveRules, Refused

NAME = "promote"
HELP = "make a stored model production if it passes the gate against the current one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tag", help="NAME:VERSION (or NAME@candidate, NAME:latest) to promote")
    add_gate_flags(parser)
    live = parser.add_argument_group("live evidence (docs/capture.md)")
    live.add_argument(
        "--labelled-capture",
        help="a folder `visiontune capture import` wrote: both models are scored on it "
        "under the same rules as --eval-data",
    )
    add_config_flags(live, LiveRules)
    add_source_arguments(live)
    parser.add_argument(
        "--force",
        action="store_true",
        help="promote even if the gate refuses (without --eval-data: no gate at all)",
    )
    parser.add_argument("--reason", help="why, recorded in the stage history")
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="where gate.json and gate.md go (default runs/NAME/promote-VERSION)",
    )


def add_gate_flags(parser: argparse.ArgumentParser) -> None:
    """``--eval-data`` and the :class:`GateRules` flags (shared with `retrain`)."""
    parser.add_argument(
        "--eval-data",
        help="held-out images both models are scored on (folder or dataset; its test "
        "split if it has one)",
    )
    add_config_flags(parser, GateRules)


def gate_rules(args: argparse.Namespace) -> GateRules:
    values = {name: getattr(args, name) for name in GateRules.model_fields}
    return GateRules.model_validate({k: v for k, v in values.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    from contract.stages import resolve
    from visiontune.lifecycle.promotion import LABELLED_RUN, promote_with_gate

    quiet_transformers()
    rules = gate_rules(args)
    tag = resolve(args.tag)
    run_dir = args.output_dir or Path("runs") / tag.name / f"promote-{tag.version}"
    promotion = promote_with_gate(
        str(tag),
        eval_data=args.eval_data,
        rules=rules,
        run_dir=run_dir,
        force=args.force,
        reason=args.reason,
        live=live_evidence(args),
    )
    for name, check, report in [
        ("gate", promotion.verdict, run_dir / "gate.md"),
        ("labelled captures", promotion.labelled, run_dir / LABELLED_RUN / "gate.md"),
        ("shadow", promotion.agreement, None),
    ]:
        if check is not None:
            print(f"{name}: {'passed' if check.passed else 'refused'}: {check.reason}")
            if report is not None:
                print(f"comparison: {report}")
    if promotion.change is None:
        refused = next(check for check in promotion.checks if not check.passed)
        raise Refused(f"{tag} stays a candidate: {refused.reason}")
    previous = promotion.change.previous_production
    after = f" ({tag.name}:{previous} archived)" if previous else ""
    print(f"{tag} is production{after}")
    return 0


def live_evidence(args: argparse.Namespace):
    """The live evidence the flags ask for."""
    from visiontune.lifecycle.promotion import LiveEvidence

    rules = LiveRules.model_validate(config_values(args, LiveRules))
    source = args.capture or args.metrics
    return LiveEvidence(
        rules=rules,
        labelled=args.labelled_capture,
        shadow_stats=(lambda: shadow_stats(args)) if source else None,
        source=f"capture {args.capture}" if args.capture else f"metrics {args.metrics}",
    )
