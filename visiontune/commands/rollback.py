"""`visiontune rollback [NAME]`: the previous production model becomes production again."""

from __future__ import annotations

import argparse

from contract.savedmodel import DEFAULT_MODEL_NAME

NAME = "rollback"
HELP = "make the previous production model production again (the current one is archived)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        default=DEFAULT_MODEL_NAME,
        help=f"model name (default {DEFAULT_MODEL_NAME})",
    )
    parser.add_argument("--reason", default="rollback", help="why, recorded in the stage history")


def run(args: argparse.Namespace) -> int:
    from visiontune.lifecycle.registry import rollback

    change = rollback(args.name, args.reason)
    print(
        f"{args.name}:{change.version} is production again "
        f"({args.name}:{change.previous_production} archived)"
    )
    return 0
