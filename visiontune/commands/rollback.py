"""`visiontune rollback [NAME]`: the previous production model becomes production again.

With ``--redeploy`` it is rolled out first (the flags of `visiontune deploy`),
and the stages change only once it serves: a release that fails leaves both
the stages and the serving pod as they were.
"""

from __future__ import annotations

import argparse

from contract.savedmodel import DEFAULT_MODEL_NAME
from visiontune.commands.deploy import add_target_arguments, check_target, release_tag

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
    parser.add_argument(
        "--redeploy",
        action="store_true",
        help="roll the model out (as `visiontune deploy` does) before changing the stages",
    )
    add_target_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from visiontune.lifecycle.registry import rollback, rollback_target

    expected = None
    if args.redeploy:
        check_target(args)
        target = rollback_target(args.name)
        release_tag(str(target), args)
        if args.dry_run:
            return 0
        expected = target.version
    change = rollback(args.name, args.reason, expected_target=expected)
    print(
        f"{args.name}:{change.version} is production again "
        f"({args.name}:{change.previous_production} archived)"
    )
    return 0
