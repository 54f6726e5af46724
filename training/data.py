"""Labelled images from a folder, a Hugging Face dataset, or an embedded dataset.

Every source becomes :class:`DataSplits`: label names in id order and
train/val(/test) lists of ``(source, label_id)`` where a source is a file path, a
PIL image, or a ``(dataset, row)`` pair of a Hugging Face dataset. Each image is
decoded once up front, so a corrupt file is reported by path before training
starts (skipped with a warning, or an error with ``--strict``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, Subset

from contract.images import ImageError, Preprocessing, decode_image, to_rgb
from training.config import TrainConfig, default_workers
from training.embedded import READERS as EMBEDDED
from training.embedded import EmbeddedDataMissing
from training.errors import first_line

log = logging.getLogger(__name__)

CACHE_LIMIT_BYTES = 4 * 2**30  # 4 GiB: decoded images kept in memory up to this size

SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
Example = tuple[Any, int]


class DataError(ValueError):
    """Data that cannot be trained on; the message is one line for the user."""


@dataclass
class DataSplits:
    labels: list[str]
    train: list[Example]
    val: list[Example]
    test: list[Example] | None
    fingerprint: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    given_split: bool = False

    @property
    def label_counts(self) -> dict[str, int]:
        counts = Counter(label for _, label in self.train)
        return {name: counts.get(i, 0) for i, name in enumerate(self.labels)}

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test or [])}


def load_image(source: Any, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Any example source to an RGB image; a JPEG file is decoded at no less than
    ``draft_size`` (width, height) when given."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, np.ndarray):  # a row of an embedded dataset's pixel array
        return to_rgb(Image.fromarray(source))
    if isinstance(source, tuple):
        dataset, row, column = source
        return _decode_hf_cell(dataset[row][column], draft_size)
    return decode_image(source, draft_size=draft_size)


def load_data(config: TrainConfig) -> DataSplits:
    """Read ``config.data``, filter classes, split, and check what is left is trainable."""
    splits, labels, fingerprint, skipped, given = _read_source(config)
    if config.classes:
        splits, labels = _keep_classes(splits, labels, config.classes)
    if not given:
        splits = _stratified_split(
            splits["train"], config.val_fraction, config.test_fraction, config.seed
        )
    elif not splits.get("val"):
        splits = {
            **splits,
            **_stratified_split(splits["train"], config.val_fraction, 0, config.seed),
        }
    data = DataSplits(
        labels=labels,
        train=splits["train"],
        val=splits.get("val") or [],
        test=splits.get("test") or None,
        fingerprint=fingerprint,
        skipped=skipped,
        given_split=given,
    )
    if config.per_class:
        data.train = _per_class(data.train, config.per_class, config.seed)
    if config.eval_per_class:
        data.val = _per_class(data.val, config.eval_per_class, config.seed)
        if data.test:
            data.test = _per_class(data.test, config.eval_per_class, config.seed)
    _check_trainable(data, config)
    return data


def load_labelled(config: TrainConfig, labels: list[str]) -> list[Example]:
    """Every image of ``config.data`` (its test split, if it has one), with ids in ``labels``' order."""
    splits, found, _, _, given = _read_source(config)
    if given and splits.get("test"):
        examples = splits["test"]
    else:
        examples = [example for split in splits.values() for example in split]
    unknown = [name for name in found if name not in labels]
    if unknown:
        raise DataError(
            f"--data {config.data}: label(s) {', '.join(unknown)} unknown to the model "
            f"(it knows {', '.join(labels)})"
        )
    if not examples:
        raise DataError(f"--data {config.data}: no images found")
    remap = {i: labels.index(name) for i, name in enumerate(found)}
    return [(source, remap[label]) for source, label in examples]


def _read_source(config: TrainConfig):
    if config.data in EMBEDDED:
        try:
            return EMBEDDED[config.data]()
        except EmbeddedDataMissing as err:
            raise DataError(str(err)) from None
    path = Path(config.data).expanduser()
    if path.is_dir() and _is_hf_dataset_folder(path):
        return _read_hf(config, path)
    if path.is_dir():
        return _read_folder(path, config.strict)
    if path.exists():
        raise DataError(f"--data {config.data}: not a folder")
    if config.data.count("/") > 1 or config.data.startswith((".", "~")):
        raise DataError(f"--data {config.data}: no such folder")
    return _read_hf(config, None)


def _read_folder(root: Path, strict: bool):
    split_dirs = {SPLIT_NAMES[d.name]: d for d in _subdirs(root) if d.name in SPLIT_NAMES}
    given = "train" in split_dirs
    if not given:
        split_dirs = {"train": root}
    labels = sorted({c.name for d in split_dirs.values() for c in _subdirs(d)})
    if not labels:
        raise DataError(f"--data {root}: no class sub-folders found")
    files = {
        split: [(p, labels.index(c.name)) for c in _subdirs(d) for p in _files(c)]
        for split, d in split_dirs.items()
    }
    every = [(p, y) for split in files.values() for p, y in split]
    bad = dict(_find_bad_images([p for p, _ in every]))
    if bad and strict:
        path, reason = next(iter(bad.items()))
        raise DataError(f"{path}: {reason} (--strict)")
    for path, reason in bad.items():
        log.warning("skipping %s: %s", path, reason)
    splits = {s: [(p, y) for p, y in examples if p not in bad] for s, examples in files.items()}
    listing = sorted(f"{p.relative_to(root)}\t{labels[y]}" for p, y in every if p not in bad)
    fingerprint = hashlib.sha256("\n".join(listing).encode()).hexdigest()
    skipped = [(str(p), r) for p, r in bad.items()]
    return splits, labels, fingerprint, skipped, given


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def _find_bad_images(paths: list[Path]) -> list[tuple[Path, str]]:
    def check(path: Path) -> str | None:
        try:
            decode_image(path, max_pixels=None)
        except Exception as err:  # a decoder may raise anything; the user needs the file named
            return failure_reason(err)
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        reasons = list(pool.map(check, paths))
    return [(p, r) for p, r in zip(paths, reasons, strict=True) if r is not None]


def failure_reason(err: Exception) -> str:
    """Why an image could not be read, in a few words (the caller names the file)."""
    if isinstance(err, ImageError):
        return str(err)
    if isinstance(err, OSError) and err.strerror:
        return f"cannot read ({err.strerror})"
    detail = f": {first_line(err)}" if str(err).strip() else ""
    return f"decoder failed ({type(err).__name__}{detail})"


def _is_hf_dataset_folder(path: Path) -> bool:
    markers = ("dataset_dict.json", "dataset_info.json", "state.json")
    has_data_files = any(path.glob("*.parquet")) or any(path.glob("data/*"))
    return any((path / m).exists() for m in markers) or has_data_files or _has_metadata(path)


def _has_metadata(path: Path) -> bool:
    """An ``imagefolder`` dataset whose labels (or other columns) come from a metadata file."""
    names = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
    return any((folder / name).exists() for folder in (path, *_subdirs(path)) for name in names)


def _read_hf(config: TrainConfig, path: Path | None):
    import datasets

    try:
        saved = ("dataset_dict.json", "state.json")
        if path is not None and any((path / name).exists() for name in saved):
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(str(path or config.data))
    except Exception as err:  # datasets raises many types; the user needs one line
        raise DataError(f"--data {config.data}: cannot load dataset ({first_line(err)})") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    splits = {SPLIT_NAMES[s]: ds for s, ds in loaded.items() if s in SPLIT_NAMES}
    if "train" not in splits:
        raise DataError(f"--data {config.data}: no 'train' split (found {', '.join(loaded)})")
    for column in (config.image_column, config.label_column):
        if column not in splits["train"].column_names:
            found = ", ".join(splits["train"].column_names)
            flag = "--image-column" if column == config.image_column else "--label-column"
            raise DataError(f"--data {config.data}: no column {column!r} ({flag}); found {found}")
    labels = _hf_labels(splits["train"], config.label_column)
    examples, skipped = {}, []
    for split, ds in splits.items():
        ds = ds.cast_column(config.image_column, datasets.Image(decode=False))
        examples[split], bad = _hf_examples(ds, config, labels)
        skipped += bad
    if skipped and config.strict:
        raise DataError(f"{skipped[0][0]}: {skipped[0][1]} (--strict)")
    for where, reason in skipped:
        log.warning("skipping %s: %s", where, reason)
    fingerprint = hashlib.sha256(
        json.dumps([labels, {s: ds._fingerprint for s, ds in splits.items()}]).encode()
    ).hexdigest()
    return examples, labels, fingerprint, skipped, len(splits) > 1


def _hf_labels(ds, column: str) -> list[str]:
    feature = ds.features[column]
    if hasattr(feature, "names"):
        return [str(n) for n in feature.names]
    return sorted({str(v) for v in ds[column]})


def _hf_examples(ds, config: TrainConfig, labels: list[str]):
    feature = ds.features[config.label_column]
    names = getattr(feature, "names", None)
    examples, bad = [], []
    for row, (cell, value) in enumerate(
        zip(ds[config.image_column], ds[config.label_column], strict=True)
    ):
        where = (cell or {}).get("path") or f"{config.data}[{row}]"
        try:
            _decode_hf_cell(cell)
        except Exception as err:  # as for files: any decoder failure skips the image by name
            bad.append((str(where), failure_reason(err)))
            continue
        name = names[value] if names else str(value)
        examples.append(((ds, row, config.image_column), labels.index(name)))
    return examples, bad


def _decode_hf_cell(cell, draft_size: tuple[int, int] | None = None) -> Image.Image:
    if isinstance(cell, Image.Image):
        return to_rgb(cell)
    if not cell:
        raise ImageError("empty", "missing image")
    if cell.get("bytes"):
        return decode_image(cell["bytes"], max_pixels=None, draft_size=draft_size)
    if cell.get("path"):
        return decode_image(cell["path"], max_pixels=None, draft_size=draft_size)
    raise ImageError("empty", "missing image")


def _keep_classes(splits, labels: list[str], keep: list[str]):
    unknown = [c for c in keep if c not in labels]
    if unknown:
        raise DataError(
            f"--classes: unknown label(s) {', '.join(unknown)}; known: {', '.join(labels)}"
        )
    remap = {labels.index(c): i for i, c in enumerate(keep)}
    kept = {
        split: [(s, remap[y]) for s, y in examples if y in remap]
        for split, examples in splits.items()
    }
    return kept, list(keep)


def _stratified_split(
    examples: list[Example], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Example]]:
    """Seeded stratified split (plain random where a class is too small to stratify)."""
    if len(examples) < 3:
        return {"train": examples}
    labels = [y for _, y in examples]
    stratify = labels if min(Counter(labels).values()) >= 3 else None
    held = val_fraction + test_fraction
    train, rest = train_test_split(examples, test_size=held, stratify=stratify, random_state=seed)
    if not test_fraction:
        return {"train": train, "val": rest}
    rest_labels = [y for _, y in rest] if stratify else None
    if rest_labels and min(Counter(rest_labels).values()) < 2:
        rest_labels = None
    val, test = train_test_split(
        rest,
        test_size=test_fraction / held,
        stratify=rest_labels,
        random_state=seed,
    )
    return {"train": train, "val": val, "test": test}


def _per_class(examples: list[Example], limit: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    shuffled = examples[:]
    rng.shuffle(shuffled)
    taken: Counter[int] = Counter()
    kept = []
    for source, label in shuffled:
        if taken[label] < limit:
            taken[label] += 1
            kept.append((source, label))
    return kept


def _check_trainable(data: DataSplits, config: TrainConfig) -> None:
    total = len(data.train) + len(data.val) + len(data.test or [])
    if total == 0:
        raise DataError(f"--data {config.data}: no images found")
    if len(data.labels) < 2:
        raise DataError(
            f"--data {config.data}: only one class ({data.labels[0]}); need at least two"
        )
    empty = [name for name, n in data.label_counts.items() if n == 0]
    if empty:
        raise DataError(
            f"--data {config.data}: no training images for class(es) {', '.join(empty)}"
        )
    if not data.val:
        raise DataError(f"--data {config.data}: the validation split is empty; add images")


class ImageSet(Dataset):
    """Examples decoded and resized: ``(H, W, 3) uint8`` tensors and label ids.

    Normalisation happens per batch on the device. A set whose decoded pixels fit in
    ``CACHE_LIMIT_BYTES`` is decoded once, up front, and kept in memory; a bigger one
    streams: each item is decoded when asked for, by the loader's worker processes
    (:func:`make_loader`). JPEGs are decoded at reduced size (``draft``, as the
    service does), no smaller than twice what the resize needs; ``cache`` and
    ``draft`` force either choice (benchmarks compare them).
    """

    def __init__(
        self,
        examples: list[Example],
        preprocessing: Preprocessing,
        *,
        cache: bool | None = None,
        draft: bool = True,
    ):
        self.examples = examples
        self.preprocessing = preprocessing
        self.draft_size = preprocessing.draft_size if draft else None
        self.labels = torch.tensor([label for _, label in examples], dtype=torch.long)
        size = len(examples) * preprocessing.height * preprocessing.width * 3
        if cache is None:
            cache = size <= CACHE_LIMIT_BYTES
        self.cache = None
        if cache and examples:
            with ThreadPoolExecutor(max_workers=4) as pool:
                self.cache = torch.from_numpy(
                    np.stack(list(pool.map(self._decode, range(len(examples)))))
                )

    def _decode(self, index: int) -> np.ndarray:
        source = self.examples[index][0]
        try:
            return self.preprocessing.resize(load_image(source, self.draft_size))
        except Exception as err:  # read fine when checked, not now (changed or removed since)
            raise DataError(f"{_describe_source(source)}: {failure_reason(err)}") from err

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int):
        pixels = (
            self.cache[index] if self.cache is not None else torch.from_numpy(self._decode(index))
        )
        return pixels, self.labels[index]


def _describe_source(source: Any) -> str:
    if isinstance(source, tuple):
        dataset, row, column = source
        return f"row {row} of the dataset (column {column!r})"
    if isinstance(source, Image.Image | np.ndarray):
        return "an embedded image"
    return str(source)


def make_loader(
    dataset: ImageSet,
    batch_size: int,
    order: list[int] | None = None,
    workers: int | None = None,
) -> DataLoader:
    """Batches in a given order: the epoch's shuffle is explicit so a resumed run replays it.

    A cached set needs no workers; a streaming one decodes in ``workers`` processes
    (default :func:`default_workers`; 0 decodes in the training process), each a few
    batches ahead, into pinned memory when there is a GPU to copy to.
    """
    if dataset.cache is not None:
        workers = 0
    elif workers is None:
        workers = default_workers()
    subset = Subset(dataset, order) if order is not None else dataset
    return DataLoader(
        subset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        pin_memory=torch.cuda.is_available(),
    )
