"""What scoring does to one image, and the Parquet folder it writes.

``decode`` is the service's decoding and preprocessing (``service.inputs``): the
header checked against the same pixel limit, the JPEG drafted to the same size,
the stored processor's resize and crop, so a file gets the same scores here as
from ``POST /classify``. Rows follow ``SCHEMA``; a file that cannot be read or
decoded gets a row with ``error`` set and no labels.

The output is a folder of Parquet files (``pandas.read_parquet(OUT)`` reads them as
one table) with ``_visiontune_score.json`` naming the model and top-k it was written
with, so that ``--resume`` scores only the images it lacks, with the same model.
"""

from __future__ import annotations

import json
import logging
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contract.images import DEFAULT_MAX_PIXELS, ImageError, Preprocessing, decode_image
from visiontune.errors import CommandError

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("label", pa.string()),
        ("score", pa.float32()),
        ("top_k_labels", pa.list_(pa.string())),
        ("top_k_scores", pa.list_(pa.float32())),
        ("model", pa.string()),
        ("error", pa.string()),
    ]
)
MANIFEST = "_visiontune_score.json"


def decode(data: bytes, preprocessing: Preprocessing) -> np.ndarray:
    """Encoded image bytes to the model-size uint8 array, exactly as the service makes it."""
    image = decode_image(data, max_pixels=DEFAULT_MAX_PIXELS, draft_size=preprocessing.draft_size)
    return preprocessing.resize(image)


def failure(err: Exception) -> str:
    """A short ``reason: message`` for the error column."""
    if isinstance(err, ImageError):
        return f"{err.reason}: {err}"
    if isinstance(err, OSError):
        return f"unreadable: {err.strerror or err}"
    return f"undecodable: {type(err).__name__}"


def scored_rows(
    ids: list[str], probabilities: np.ndarray, labels: list[str], top_k: int, model: str
) -> pa.Table:
    """One row per image with its ``top_k`` labels and calibrated scores, best first."""
    k = min(top_k, len(labels))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(probabilities, order, axis=1).astype(np.float32)
    names = np.asarray(labels, dtype=object)[order]
    return pa.table(
        {
            "id": ids,
            "label": list(names[:, 0]),
            "score": scores[:, 0],
            "top_k_labels": [list(row) for row in names],
            "top_k_scores": [list(row) for row in scores],
            "model": [model] * len(ids),
            "error": pa.nulls(len(ids), pa.string()),
        },
        schema=SCHEMA,
    )


def error_rows(ids: list[str], errors: list[str], model: str) -> pa.Table:
    count = len(ids)
    return pa.table(
        {
            "id": ids,
            "label": pa.nulls(count, pa.string()),
            "score": pa.nulls(count, pa.float32()),
            "top_k_labels": pa.nulls(count, pa.list_(pa.string())),
            "top_k_scores": pa.nulls(count, pa.list_(pa.float32())),
            "model": [model] * count,
            "error": errors,
        },
        schema=SCHEMA,
    )


class Output:
    """The Parquet folder ``--output``: started for one model and top-k, resumable."""

    def __init__(self, url: str, *, model: str, top_k: int, data: str, resume: bool):
        import fsspec

        self.url = url
        self.filesystem, self.root = fsspec.core.url_to_fs(url)
        self.run = uuid.uuid4().hex[:8]
        self.parts = 0
        manifest = {"model": model, "top_k": top_k, "data": data}
        self.done = self._start(manifest, resume)

    def _start(self, manifest: dict, resume: bool) -> set[str]:
        """The ids already scored (none for a new folder); refuses to mix two runs' results."""
        fs, path = self.filesystem, f"{self.root}/{MANIFEST}"
        existing = fs.exists(self.root) and any(
            not name.rsplit("/", 1)[-1].startswith(".") for name in fs.ls(self.root, detail=False)
        )
        if existing and not resume:
            raise CommandError(
                f"--output {self.url} already holds files: add --resume to score only the "
                "images it lacks, or name another folder"
            )
        if existing and fs.exists(path):
            written = json.loads(fs.cat_file(path))
            for key in ("model", "top_k"):
                if written.get(key) != manifest[key]:
                    raise CommandError(
                        f"--resume: {self.url} was written with {key} {written.get(key)}, not "
                        f"{manifest[key]}; use --output with a new folder for this run"
                    )
        elif existing:
            raise CommandError(f"--output {self.url} holds files but no {MANIFEST}: not ours")
        fs.makedirs(self.root, exist_ok=True)
        with fs.open(path, "w") as file:
            file.write(json.dumps(manifest, indent=2))
        return self._done_ids() if existing else set()

    def files(self) -> list[str]:
        names = self.filesystem.glob(f"{self.root}/*.parquet")
        return sorted(n for n in names if not n.rsplit("/", 1)[-1].startswith((".", "_")))

    def _done_ids(self) -> set[str]:
        """Ids in the folder's readable files; a file cut short by a kill is removed."""
        done: set[str] = set()
        for name in self.files():
            try:
                with self.filesystem.open(name, "rb") as file:
                    done.update(pq.read_table(file, columns=["id"]).column("id").to_pylist())
            except (OSError, pa.ArrowInvalid) as err:
                log.warning("removing %s, cut short (%s): its images are scored again", name, err)
                self.filesystem.rm(name)
        return done

    def write(self, table: pa.Table) -> None:
        """One more Parquet file, written under a hidden name and renamed when complete."""
        name = f"part-{self.run}-{self.parts:05d}.parquet"
        hidden, final = f"{self.root}/.{name}", f"{self.root}/{name}"
        with self.filesystem.open(hidden, "wb") as file:
            pq.write_table(table, file)
        self.filesystem.mv(hidden, final)
        self.parts += 1

    def counts(self) -> tuple[int, int]:
        """(rows, rows with an error) over every file of the folder."""
        rows = errors = 0
        for name in self.files():
            with self.filesystem.open(name, "rb") as file:
                column = pq.read_table(file, columns=["error"]).column("error")
            rows, errors = rows + len(column), errors + len(column) - column.null_count
        return rows, errors
