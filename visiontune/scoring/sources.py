"""Where the images to score come from: a folder, an fsspec URL, or a Hugging Face dataset.

Every image has an ``id`` that names it in the output: the file's path for a local
folder, its URL for remote storage (``s3://bucket/key``), ``SPLIT/ROW`` for a row of
a dataset. Only files with an image suffix are listed (as ``visiontune predict``
does); a listed file that cannot be read or decoded becomes a row with an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.errors import first_line
from visiontune.client import IMAGE_SUFFIXES
from visiontune.errors import CommandError

# A folder written by `datasets.Dataset(Dict).save_to_disk`.
SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json")


@dataclass
class Source:
    """The images of ``--data``: ``ids[i]`` names image ``i``, ``read(i)`` gives its bytes."""

    given: str
    ids: list[str]
    filesystem: Any = None  # fsspec filesystem of listed files
    paths: list[str] | None = None  # the files' paths on ``filesystem``, by index
    dataset: Any = None  # datasets.Dataset with columns ``id`` and ``image`` (undecoded)

    @property
    def protocol(self) -> str:
        """``file`` for local files, the URL scheme for remote ones, ``dataset`` for a dataset."""
        if self.filesystem is None:
            return "dataset"
        protocol = self.filesystem.protocol
        return protocol if isinstance(protocol, str) else protocol[0]

    def read(self, index: int) -> bytes:
        if self.dataset is None:
            return self.filesystem.cat_file(self.paths[index])
        return cell_bytes(self.dataset[index]["image"])


def open_source(given: str, image_column: str = "image") -> Source:
    """The images named by ``--data``: a URL, a folder, a saved dataset, or a dataset name."""
    path = Path(given).expanduser()
    if "://" in given:
        return _files(given)
    if path.is_dir() and any((path / marker).exists() for marker in SAVED_DATASET_MARKERS):
        return _dataset(given, image_column, saved=path)
    if path.is_dir():
        return _files(str(path.resolve()))
    if path.exists():
        raise CommandError(f"--data {given}: not a folder (give the folder that holds the images)")
    if given.startswith((".", "/", "~")) or given.count("/") > 1:
        raise CommandError(f"--data {given}: no such folder")
    return _dataset(given, image_column, saved=None)


def file_id(protocol: str, path: str) -> str:
    """A listed file's id: its local path, or its URL on remote storage."""
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def cell_bytes(cell: dict | None) -> bytes:
    """The encoded bytes of an undecoded ``datasets.Image`` cell (``bytes``, else ``path``)."""
    if cell and cell.get("bytes"):
        return cell["bytes"]
    if cell and cell.get("path"):
        return Path(cell["path"]).read_bytes()
    return b""  # decoding names it: an empty image


def _files(url: str) -> Source:
    import fsspec

    try:
        filesystem, root = fsspec.core.url_to_fs(url)
        found = filesystem.find(root)
    except (ImportError, ValueError) as err:
        raise CommandError(f"--data {url}: {err}") from None
    except OSError as err:
        raise CommandError(f"--data {url}: cannot list ({err.strerror or err})") from None
    paths = sorted(p for p in found if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CommandError(
            f"--data {url}: no images found (files ending {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    source = Source(given=url, ids=[], filesystem=filesystem, paths=paths)
    source.ids = [file_id(source.protocol, path) for path in paths]
    return source


def _dataset(given: str, image_column: str, saved: Path | None) -> Source:
    """Every split of a dataset as one table of ``id`` (``SPLIT/ROW``) and undecoded ``image``."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(saved)) if saved else datasets.load_dataset(given)
    except Exception as err:  # datasets raises many types; the user needs one line
        raise CommandError(f"--data {given}: cannot load dataset ({first_line(err)})") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    parts = []
    for split, table in loaded.items():
        if image_column not in table.column_names:
            found = ", ".join(table.column_names)
            raise CommandError(
                f"--data {given}: no column {image_column!r} in split {split} "
                f"(--image-column); found {found}"
            )
        table = table.select_columns([image_column])
        table = table.cast_column(image_column, datasets.Image(decode=False))
        table = table.rename_column(image_column, "image") if image_column != "image" else table
        parts.append(table.add_column("id", [f"{split}/{row}" for row in range(len(table))]))
    dataset = datasets.concatenate_datasets(parts)
    if not len(dataset):
        raise CommandError(f"--data {given}: the dataset has no rows")
    return Source(given=given, ids=list(dataset["id"]), dataset=dataset)
