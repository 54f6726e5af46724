"""`visiontune optimize TAG [--int8]`: keep the ONNX graphs the fast runtimes serve in the store.

The service's ONNX Runtime and OpenVINO runtimes (``VISIONTUNE_RUNTIME``) run these
graphs; run it before ``bentoml build`` so the bento packs them. Exit 0 kept, 3 the
int8 graph refused (it loses more accuracy than ``--max-accuracy-loss``; the fp32
graph is still kept), 2 usage or data error.
"""

from __future__ import annotations

import argparse
import importlib.util

from visiontune.errors import EXIT_REFUSED, CommandError
from visiontune.flags import quiet_transformers

NAME = "optimize"
HELP = "keep ONNX graphs (fp32, and int8 with --int8) in a stored model for faster runtimes"
NEEDS = ("onnx", "onnxruntime", "onnxscript")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.optimize import MAX_LOSS

    parser.add_argument("tag", help="NAME:VERSION or NAME@STAGE of the stored model")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also a statically quantized int8 graph, calibrated on the model's stored "
        "training images and checked on its stored held-out images",
    )
    parser.add_argument(
        "--max-accuracy-loss",
        type=float,
        default=MAX_LOSS,
        metavar="SHARE",
        help=f"held-out accuracy int8 may lose, 0-1 (default {MAX_LOSS}: one point)",
    )


def run(args: argparse.Namespace) -> int:
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise CommandError(
            f"optimize needs {', '.join(missing)}: pip install 'visiontune[runtimes]'"
        )
    if not 0 <= args.max_accuracy_loss <= 1:
        raise CommandError("--max-accuracy-loss: a share between 0 and 1 (0.01 is one point)")
    quiet_transformers()
    from training.optimize import Int8Refused, optimize

    try:
        done = optimize(args.tag, int8=args.int8, max_loss=args.max_accuracy_loss)
    except Int8Refused as refused:
        raise CommandError(str(refused), EXIT_REFUSED) from None
    graphs = done.graphs
    kept = "exported" if done.exported else "already kept"
    print(
        f"{done.tag}: ONNX graph {kept} (ONNX Runtime vs PyTorch: max |logit difference| "
        f"{graphs.max_logit_difference:.1e})"
    )
    if args.int8 and graphs.int8 is not None:
        check = graphs.int8
        print(
            f"{done.tag}: int8 graph kept; held-out accuracy {check.accuracy_fp32:.2%} -> "
            f"{check.accuracy_int8:.2%} ({100 * check.accuracy_change:+.2f} points, at most "
            f"-{100 * check.max_loss:.2f} allowed) on {check.held_out_images} images; top-1 "
            f"agreement {check.top1_agreement:.2%}; calibrated on {check.calibration_images}"
        )
    return 0
