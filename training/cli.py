"""`visiontune`: train, evaluate and list models; errors are one line, never a traceback.

The `train` flags are generated from :class:`training.config.TrainConfig`, so the
help text and validation live in one place.
"""

from __future__ import annotations

import argparse
import logging
import sys
import types
import typing
from pathlib import Path

from pydantic import ValidationError

from contract.savedmodel import STAGE_LABEL
from training import client
from training.config import TrainConfig

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("httpx", "bentoml", "transformers", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.run(args) or 0
    except ValidationError as err:
        return _fail(_validation_message(err))
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as err:  # the CLI edge: every failure becomes one line
        from training.train import Interrupted

        if isinstance(err, Interrupted):
            return _fail(str(err), EXIT_INTERRUPTED)
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        return _fail(_one_line(err))


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line like every other error (``--help`` shows the usage)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_ERROR, f"visiontune: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="visiontune",
        description="Fine-tune a vision backbone with a new head and keep it in the BentoML store.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="fine-tune a backbone and save it to the store")
    add_config_flags(train, TrainConfig)
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a stored model on a dataset")
    evaluate.add_argument("tag", help="model tag, e.g. visiontune-classifier:latest")
    evaluate.add_argument(
        "--data", required=True, help=TrainConfig.model_fields["data"].description
    )
    for name in ("image_column", "label_column", "batch_size", "strict"):
        _add_field_flag(evaluate, name, TrainConfig.model_fields[name])
    evaluate.add_argument("--output-dir", type=Path, help="write report.json/.md and plots here")
    evaluate.set_defaults(run=_evaluate)

    models = commands.add_parser("models", help="list stored models with stage and key metrics")
    models.add_argument("name", nargs="?", help="only models of this name")
    models.set_defaults(run=_models)

    predict = commands.add_parser("predict", help="classify image files with a running service")
    client.add_arguments(predict)
    predict.set_defaults(run=client.run)
    return parser


def add_config_flags(parser: argparse.ArgumentParser, model: type) -> None:
    """One flag per pydantic field: help from its description, values validated by pydantic."""
    for name, field in model.model_fields.items():
        _add_field_flag(parser, name, field)


def _add_field_flag(parser: argparse.ArgumentParser, name: str, field) -> None:
    flag = "--" + name.replace("_", "-")
    help_text = field.description or ""
    if field.annotation is bool:
        parser.add_argument(flag, dest=name, action="store_true", default=None, help=help_text)
        return
    choices = _choices(field.annotation)
    if not field.is_required() and field.default is not None:
        help_text += f" (default: {getattr(field.default, 'value', field.default)})"
    parser.add_argument(flag, dest=name, choices=choices, default=None, help=help_text)


def _choices(annotation) -> list[str] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, str) and annotation is not str:
        return [member.value for member in annotation]  # a StrEnum
    return None


def _config_values(args: argparse.Namespace, model: type) -> dict:
    values = {}
    for name, field in model.model_fields.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if _is_list(field.annotation) and isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        values[name] = value
    return values


def _is_list(annotation) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return typing.get_origin(annotation) is list


def _quiet_transformers() -> None:
    """transformers' own bars (loading/writing weights) are noise on stderr, not progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _train(args: argparse.Namespace) -> int:
    config = TrainConfig.model_validate(_config_values(args, TrainConfig))
    _quiet_transformers()
    from training.train import train

    result = train(config)
    if result.tag is not None:
        m = result.metadata
        held_out = f"  test acc {m.test.accuracy:.4f}" if m.test else ""
        print(
            f"saved {result.tag}  val acc {m.validation.accuracy:.4f}  "
            f"val macro-F1 {m.validation.macro_f1:.4f}{held_out}  "
            f"T={m.temperature:.3f}  report {result.run_dir / 'report.md'}"
        )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_stored

    _quiet_transformers()
    values = {"data": args.data, **_config_values(args, TrainConfig)}
    evaluation = evaluate_stored(args.tag, values, args.output_dir)
    m = evaluation.metrics
    print(
        f"{args.tag}: {m.n} images  accuracy {m.accuracy:.4f}  macro-F1 {m.macro_f1:.4f}  "
        f"ECE {m.ece:.4f}  NLL {m.nll:.4f}"
    )
    return 0


def _models(args: argparse.Namespace) -> int:
    from training.store import list_models

    rows = [
        ("TAG", "STAGE", "BACKBONE", "STRATEGY", "VAL ACC", "VAL F1", "TEST ACC", "ECE", "CREATED")
    ]
    for model in list_models(args.name):
        meta = model.info.metadata
        test = meta.get("test") or {}
        rows.append(
            (
                str(model.tag),
                model.info.labels.get(STAGE_LABEL, "?"),
                meta.get("backbone", "?"),
                meta.get("strategy", "?"),
                f"{meta['validation']['accuracy']:.4f}",
                f"{meta['validation']['macro_f1']:.4f}",
                f"{test['accuracy']:.4f}" if test else "-",
                f"{(test or meta['validation'])['ece']:.4f}",
                model.info.creation_time.strftime("%Y-%m-%d %H:%M"),
            )
        )
    if len(rows) == 1:
        print("no visiontune models in the store")
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _validation_message(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if not where:
        return message
    return f"--{where.replace('_', '-')}: {message}"


def _one_line(err: Exception) -> str:
    text = str(err).strip()
    text = text.splitlines()[0] if text else type(err).__name__
    if isinstance(err, FileNotFoundError | PermissionError) and err.filename:
        return f"{err.filename}: {err.strerror}"
    return text


def _fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"visiontune: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
