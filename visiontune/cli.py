"""`visiontune COMMAND`: one sub-command per module of ``visiontune.commands``.

Errors are one line on stderr (``visiontune: error: ...``) with the exit code
``visiontune.errors`` assigns, never a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import logging
import sys
import typing

from visiontune.commands import COMMANDS
from visiontune.errors import EXIT_ERROR, PREFIX, fail, message_and_code

NOISY_LOGGERS = ("httpx", "bentoml", "transformers", "datasets", "accelerate")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(message)s"
    )
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.run(args) or 0
    except (Exception, KeyboardInterrupt) as err:  # the CLI edge: every failure is one line
        if args.debug:
            raise
        return fail(*message_and_code(err))


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line like every other error (``--help`` shows the usage)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_ERROR, f"{PREFIX}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="visiontune",
        description="Fine-tune a vision backbone with a new head, keep it in the BentoML "
        "store, and serve it.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        command = commands.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


if __name__ == "__main__":
    sys.exit(main())
