"""`visiontune export TAG --format onnx [--output PATH]`: a stored model as an ONNX file.

The file maps ``pixel_values`` (any batch size) to ``logits`` and carries the labels,
the calibration temperature and the image processor config in its metadata.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from visiontune.errors import CommandError
from visiontune.flags import quiet_transformers

NAME = "export"
HELP = "export a stored model to ONNX"
FORMATS = ("onnx",)
NEEDS = ("onnx", "onnxruntime", "onnxscript")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tag", help="model tag, e.g. visiontune-classifier:latest")
    parser.add_argument("--format", choices=FORMATS, required=True, help="export format")
    parser.add_argument("--output", type=Path, help="file to write (default ./NAME-VERSION.onnx)")


def run(args: argparse.Namespace) -> int:
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise CommandError(
            f"--format onnx needs {', '.join(missing)}: pip install 'visiontune[export]'"
        )
    quiet_transformers()
    from training.export import export_onnx

    exported = export_onnx(args.tag, args.output)
    print(
        f"exported {exported.tag} to {exported.path}  "
        f"(ONNX Runtime vs PyTorch: max |logit difference| {exported.max_difference:.1e})"
    )
    return 0
