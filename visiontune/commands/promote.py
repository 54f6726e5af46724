"""`visiontune promote TAG`: make a stored model production if it beats the current one.

Exit 0 promoted, 3 refused by the gate (nothing changed), 2 usage or data error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visiontune.flags import add_config_flags, quiet_transformers
from visiontune.lifecycle.gate import GateRules, Refused

NAME = "promote"
HELP = "make a stored model production if it passes the gate against the current one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tag", help="NAME:VERSION (or NAME@candidate, NAME:latest) to promote")
    add_gate_flags(parser)
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
    from visiontune.lifecycle.promotion import promote_with_gate

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
    )
    verdict = promotion.verdict
    if verdict is not None:
        print(f"gate: {'passed' if verdict.passed else 'refused'}: {verdict.reason}")
        print(f"comparison: {run_dir / 'gate.md'}")
    if promotion.change is None:
        raise Refused(f"{tag} stays a candidate: {verdict.reason}")
    previous = promotion.change.previous_production
    after = f" ({tag.name}:{previous} archived)" if previous else ""
    print(f"{tag} is production{after}")
    return 0
