"""`visiontune models [NAME]`: stored models with their stage, key metrics and lineage."""

from __future__ import annotations

import argparse

NAME = "models"
HELP = "list stored models with stage and key metrics"
COLUMNS = (
    "TAG",
    "STAGE",
    "BACKBONE",
    "STRATEGY",
    "VAL ACC",
    "VAL F1",
    "TEST ACC",
    "ECE",
    "PARENT",
    "PROMOTED",
    "CREATED",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="only models of this name")


def run(args: argparse.Namespace) -> int:
    from contract.stages import read_record
    from training.store import list_models

    models = list_models(args.name)
    records = {name: read_record(name) for name in {m.tag.name for m in models}}
    rows = [COLUMNS, *(_row(model, records[model.tag.name]) for model in models)]
    if len(rows) == 1:
        print("no visiontune models in the store")
        return 0
    print(table(rows))
    return 0


def _row(model, record) -> tuple[str, ...]:
    meta = model.info.metadata
    test = meta.get("test") or {}
    version = str(model.tag.version)
    promoted = record.promoted_at(version)
    return (
        str(model.tag),
        record.stage(version).value,
        meta.get("backbone", "?"),
        meta.get("strategy", "?"),
        f"{meta['validation']['accuracy']:.4f}",
        f"{meta['validation']['macro_f1']:.4f}",
        f"{test['accuracy']:.4f}" if test else "-",
        f"{(test or meta['validation'])['ece']:.4f}",
        (meta.get("lineage") or {}).get("parent") or "-",
        promoted.strftime("%Y-%m-%d %H:%M") if promoted else "-",
        model.info.creation_time.strftime("%Y-%m-%d %H:%M"),
    )


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
