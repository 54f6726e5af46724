"""`visiontune capture export|import`: captured traffic to a labelling tool and back.

``export --to label-studio CAPTURE OUT.json`` writes Label Studio tasks for the
captured images, the least confident answers first, with the model's answer as
a pre-annotation. ``import EXPORT.json --output DIR`` turns Label Studio's JSON
export into a labelled folder (one sub-folder per label) that ``visiontune
retrain --data DIR`` takes; the inference ids go into the lineage of the model
trained on it. docs/capture.md walks through the loop.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from visiontune.errors import CommandError

NAME = "capture"
HELP = "send captured traffic to a labelling tool (export) and take its labels back (import)"
TOOLS = ("label-studio",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="write labelling tasks for the captured images",
        description="Write Label Studio tasks (its JSON import format) for the images of a "
        "capture, the least confident answers first, each with the model's answer (and the "
        "shadow's, if one ran) as a pre-annotation.",
    )
    export.add_argument("--to", choices=TOOLS, required=True, help="the labelling tool")
    export.add_argument(
        "capture", help="the capture: its folder or fsspec URL (VISIONTUNE_CAPTURE)"
    )
    export.add_argument("output", type=Path, help="tasks file to write (JSON)")
    export.add_argument("--limit", type=int, help="at most this many tasks (the least confident)")
    export.add_argument(
        "--image-url-prefix",
        help="name each image by this prefix + its path in the capture, for a Label Studio "
        "that reads the capture itself (e.g. /data/local-files/?d=capture/ or "
        "s3://bucket/prefix/); default: the image is embedded in its task",
    )
    export.add_argument(
        "--label-config",
        type=Path,
        help="also write the labelling interface (XML) for the models' labels here",
    )
    imports = actions.add_parser(
        "import",
        help="turn a labelling tool's export into a labelled folder",
        description="Read Label Studio's JSON export of tasks made by `capture export` and "
        "write each labelled image to OUTPUT/LABEL/INFERENCE_ID.EXT, with the inference ids "
        "in OUTPUT/visiontune-capture.json; `visiontune retrain --data OUTPUT` takes it.",
    )
    imports.add_argument("export", type=Path, help="Label Studio's JSON export")
    imports.add_argument(
        "--output", type=Path, required=True, help="folder to write (new or empty)"
    )
    imports.add_argument(
        "--capture",
        help="read images from this capture instead of the one each task names "
        "(tasks exported with --image-url-prefix)",
    )


def run(args: argparse.Namespace) -> int:
    from contract.capture import CaptureError
    from visiontune.labelling import LabellingError

    try:
        return export(args) if args.action == "export" else import_(args)
    except (CaptureError, LabellingError) as err:
        raise CommandError(str(err)) from None


def export(args: argparse.Namespace) -> int:
    from contract.capture import read_records
    from visiontune.labelling import export_tasks, label_config, labels_of

    if args.limit is not None and args.limit < 1:
        raise CommandError("--limit must be at least 1")
    tasks = export_tasks(args.capture, args.limit, args.image_url_prefix)
    if not tasks:
        raise CommandError(f"{args.capture}: the capture holds no records yet")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(tasks, ensure_ascii=False))
    lowest, highest = tasks[0]["predictions"][0]["score"], tasks[-1]["predictions"][0]["score"]
    print(f"wrote {len(tasks)} tasks to {args.output} (scores {lowest:.3f} to {highest:.3f})")
    if args.label_config:
        labels = labels_of(list(read_records(args.capture)))
        args.label_config.write_text(label_config(labels))
        print(f"labelling interface for {len(labels)} labels: {args.label_config}")
    return 0


def import_(args: argparse.Namespace) -> int:
    from visiontune.labelling import import_labels

    imported = import_labels(args.export, args.output, args.capture)
    counts = ", ".join(f"{label} {n}" for label, n in imported.by_label.items())
    print(
        f"wrote {imported.images} labelled images to {args.output} ({counts}); "
        f"{imported.unlabelled} tasks without a label skipped; the model's answer was the "
        f"label for {imported.agreed} of {imported.images}"
    )
    print(f"retrain on them: visiontune retrain --data {args.output}")
    return 0
