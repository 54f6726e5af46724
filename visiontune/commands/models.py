"""`visiontune models [NAME]`: stored models with their stage and key metrics."""

from __future__ import annotations

import argparse

from contract.savedmodel import STAGE_LABEL

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
    "CREATED",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="only models of this name")


def run(args: argparse.Namespace) -> int:
    from training.store import list_models

    rows = [COLUMNS, *(_row(model) for model in list_models(args.name))]
    if len(rows) == 1:
        print("no visiontune models in the store")
        return 0
    print(table(rows))
    return 0


def _row(model) -> tuple[str, ...]:
    meta = model.info.metadata
    test = meta.get("test") or {}
    return (
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


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
