"""`visiontune shadow report`: how the shadow model compares with the model serving.

From a capture (``--capture``: the images of sampled requests that both models
answered) or from Prometheus (``--metrics``: a Prometheus server, summed over
every pod, or one service's /metrics): top-1 agreement, each model's mean
confidence and low-confidence share on the same images, and forward-pass time
per image.
"""

from __future__ import annotations

import argparse
import json

from visiontune.errors import CommandError

NAME = "shadow"
HELP = "compare a shadow model (VISIONTUNE_SHADOW) with the model serving, on live traffic"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    report = actions.add_parser(
        "report",
        help="agreement, confidence and latency of the model serving vs its shadow",
        description="Agreement of top-1 labels, mean confidence, low-confidence share and "
        "forward-pass time per image of the model serving and its shadow, on the images both "
        "answered.",
    )
    add_source_arguments(report)
    report.add_argument(
        "--low-confidence",
        type=float,
        default=0.5,
        help="scores below this count as low confidence, for a capture (default 0.5, the "
        "service's VISIONTUNE_LOW_CONFIDENCE default; metrics use the service's own)",
    )
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Where live evidence comes from (shared with `visiontune promote`)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--capture", help="a capture: its folder or fsspec URL (VISIONTUNE_CAPTURE)"
    )
    source.add_argument(
        "--metrics",
        help="a Prometheus server (http://prometheus:9090) or one service's /metrics URL",
    )


def shadow_stats(args: argparse.Namespace, low_confidence: float = 0.5):
    """The statistics from the source the flags name."""
    from contract.capture import CaptureError
    from visiontune.lifecycle.shadow import ShadowSourceError, from_capture, from_metrics

    try:
        if args.capture:
            return from_capture(args.capture, low_confidence)
        return from_metrics(args.metrics)
    except (CaptureError, ShadowSourceError) as err:
        raise CommandError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    from visiontune.lifecycle.shadow import table

    if not (args.capture or args.metrics):
        raise CommandError("name where the evidence is: --capture CAPTURE or --metrics URL")
    if not 0 <= args.low_confidence <= 1:
        raise CommandError("--low-confidence must be between 0 and 1")
    stats = shadow_stats(args, args.low_confidence)
    if not stats:
        where = args.capture or args.metrics
        raise CommandError(f"{where}: no image answered by a shadow model yet")
    if args.json:
        print(json.dumps([s.model_dump() | {"agreement": s.agreement} for s in stats], indent=2))
    else:
        print(table(stats))
    return 0
