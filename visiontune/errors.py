"""Every `visiontune` failure becomes one line, ``visiontune: error: ...``, and an exit code.

Exit codes a pipeline can act on: 0 done, 1 some inputs failed (``predict``), 2 a
usage or data error, 3 refused by the promotion gate, 130 interrupted.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from training.errors import first_line

EXIT_PARTIAL = 1
EXIT_ERROR = 2
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130
PREFIX = "visiontune: error: "


class CommandError(Exception):
    """A failure with a message for the user and the exit code it means."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


def message_and_code(err: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for any exception that reached the CLI's edge."""
    from training.stopping import Interrupted

    if isinstance(err, Interrupted):
        return str(err), EXIT_INTERRUPTED
    if isinstance(err, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(err, CommandError):
        return str(err), err.code
    if isinstance(err, ValidationError):
        return validation_message(err), EXIT_ERROR
    from visiontune.lifecycle.gate import Refused

    if isinstance(err, Refused):
        return str(err), EXIT_REFUSED
    return one_line(err), EXIT_ERROR


def fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"{PREFIX}{message}", file=sys.stderr)
    return code


def validation_message(err: ValidationError) -> str:
    """pydantic's first error, named by the flag that set the field."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if not where:
        return message
    return f"--{where.replace('_', '-')}: {message}"


def one_line(err: BaseException) -> str:
    if isinstance(err, FileNotFoundError | PermissionError) and err.filename:
        return f"{err.filename}: {err.strerror}"
    return first_line(err)
