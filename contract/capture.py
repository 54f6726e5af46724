"""What the service's capture holds, and where: the record both the writer and its readers use.

A capture (``VISIONTUNE_CAPTURE``: a folder, or an fsspec URL such as
``s3://bucket/prefix``) is partitioned by the hour the answers were given, as
SageMaker's data capture is::

    CAPTURE/2026/05/01/13/HOST-PID-TIME-SEQ.jsonl       one record per line
    CAPTURE/2026/05/01/13/images/INFERENCE_ID.png       the image as received

Each JSON Lines file is written whole (``service.capture``): a reader sees a
complete file or none. Its images are written before it, so every record's
``image`` exists. ``visiontune capture export`` and ``visiontune shadow report``
read records with :func:`read_records`; ``visiontune capture import`` writes a
labelled folder with :data:`LABELLED_MANIFEST` beside its class folders, which
training reads back (:func:`captured_ids`) to record the inference ids in the
model's lineage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

RECORDS_GLOB = "[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/[0-9][0-9]/*.jsonl"
LABELLED_MANIFEST = "visiontune-capture.json"
INFERENCE_ID_HEADER = "x-inference-id"


class CaptureError(ValueError):
    """A capture location that can't be used; the message names it."""


class LabelScore(BaseModel):
    label: str
    score: float


class Answer(BaseModel):
    """One model's answer for one image."""

    model: str = Field(description="Tag of the model that answered.")
    label: str
    score: float = Field(description="Calibrated probability of the label.")
    top_k: list[LabelScore]
    seconds: float = Field(description="The forward pass of the batch this image was in.")
    batch: int = Field(description="Images in that forward pass.")


class CaptureRecord(BaseModel):
    """One captured image: the answer it got, the shadow's answer if one ran, the request."""

    inference_id: str
    time: datetime = Field(description="When the answer was given (UTC).")
    answer: Answer
    shadow: Answer | None = Field(None, description="The shadow model's answer (never returned).")
    reason: Literal["sampled", "low_confidence"] = Field(
        description="Why it was kept: the request was sampled, or the answer's score was low."
    )
    image: str = Field(description="The image file, relative to the capture's root.")
    media_type: str
    image_bytes: int
    headers: dict[str, str] = Field(default_factory=dict)


def partition(when: datetime) -> str:
    """The folder of an hour: ``YYYY/MM/DD/HH``."""
    return when.strftime("%Y/%m/%d/%H")


def image_path(record_time: datetime, inference_id: str, extension: str) -> str:
    return f"{partition(record_time)}/images/{inference_id}.{extension}"


def open_location(url: str, what: str = "the capture"):
    """``(filesystem, root)`` of a folder or fsspec URL; unknown schemes are one clear error.

    A new filesystem each time: fsspec would otherwise hand back one made earlier in the
    process with the credentials and endpoint of then (an S3 endpoint or key since changed)."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    except (ValueError, ImportError) as err:
        raise CaptureError(f"{url}: {what} is not a folder or a known fsspec URL ({err})") from None
    return fs, root.rstrip("/")


def read_records(url: str) -> Iterator[CaptureRecord]:
    """Every record of a capture, oldest file first."""
    fs, root = open_location(url)
    fs.invalidate_cache()  # an object store's listings are cached; writers keep adding
    if not fs.exists(root):
        raise CaptureError(f"{url}: no such capture")
    for path in sorted(fs.glob(f"{root}/{RECORDS_GLOB}")):
        with fs.open(path, "rb") as lines:
            for line in lines:
                if line.strip():
                    yield CaptureRecord.model_validate_json(line)


def read_image(url: str, record: CaptureRecord) -> bytes:
    fs, root = open_location(url)
    return fs.cat_file(f"{root}/{record.image}")


class LabelledImage(BaseModel):
    inference_id: str
    label: str
    file: str = Field(description="Path inside the labelled folder.")


class LabelledCapture(BaseModel):
    """The manifest of a labelled folder made from a capture (``LABELLED_MANIFEST``)."""

    source: str = Field(description="The labelling tool's export it was made from.")
    images: list[LabelledImage]


def captured_ids(data: str) -> list[str]:
    """The inference ids of a labelled folder made from a capture; [] for any other data."""
    manifest = Path(data).expanduser() / LABELLED_MANIFEST
    if not manifest.is_file():
        return []
    labelled = LabelledCapture.model_validate(json.loads(manifest.read_text()))
    return [image.inference_id for image in labelled.images]
