"""`visiontune backbone import SOURCE --output DIR`: pretrained weights that installed
with a package, written as a Hugging Face folder that ``--backbone DIR`` takes.

Each SOURCE is an importer in ``training.pretrained``; more sources join the same
command. ``--backbone SOURCE`` runs the same import into the cache on first use.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visiontune.errors import CommandError
from visiontune.flags import quiet_transformers

NAME = "backbone"
HELP = "import pretrained backbones that installed with a package"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.pretrained import SOURCES

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = "; ".join(f"{s.name}: {s.package} ({s.licence})" for s in SOURCES.values())
    imports = actions.add_parser(
        "import",
        help="write a source's weights as a Hugging Face folder",
        description="Write a pretrained backbone that a package holds as a Hugging Face "
        "folder (safetensors, config with its labels, image processor, model card), usable "
        "as --backbone DIR. Sources today: " + listing + ". Other sources are added as "
        "importers of the same command; hub ids and local folders need no import.",
    )
    imports.add_argument("source", choices=sorted(SOURCES), help="what to import")
    imports.add_argument(
        "--output", type=Path, required=True, help="folder to write (must not exist, or be empty)"
    )


def run(args: argparse.Namespace) -> int:
    quiet_transformers()
    from training.pretrained import SourceError, import_backbone

    try:
        folder = import_backbone(args.source, args.output)
    except SourceError as err:
        raise CommandError(str(err)) from None
    print(f"imported {args.source} to {folder}: use it as --backbone {folder}")
    return 0
