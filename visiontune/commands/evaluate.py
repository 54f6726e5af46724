"""`visiontune evaluate TAG --data ...`: score a stored model on labelled images."""

from __future__ import annotations

import argparse
from pathlib import Path

from training.config import TrainConfig
from visiontune.flags import add_field_flag, config_values, quiet_transformers

NAME = "evaluate"
HELP = "evaluate a stored model on a dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "tag", help="NAME:VERSION, NAME:latest or NAME@STAGE, e.g. visiontune-classifier@production"
    )
    parser.add_argument("--data", required=True, help=TrainConfig.model_fields["data"].description)
    for name in ("image_column", "label_column", "batch_size", "strict"):
        add_field_flag(parser, name, TrainConfig.model_fields[name])
    parser.add_argument("--output-dir", type=Path, help="write report.json/.md and plots here")


def run(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_stored

    quiet_transformers()
    values = {"data": args.data, **config_values(args, TrainConfig)}
    evaluation = evaluate_stored(args.tag, values, args.output_dir)
    m = evaluation.metrics
    print(
        f"{args.tag}: {m.n} images  accuracy {m.accuracy:.4f}  macro-F1 {m.macro_f1:.4f}  "
        f"ECE {m.ece:.4f}  NLL {m.nll:.4f}"
    )
    return 0
