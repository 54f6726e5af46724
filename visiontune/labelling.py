"""From a capture to Label Studio and back: tasks with the model's answer, a labelled folder.

``export_tasks`` turns captured records into Label Studio tasks (its JSON import
format), the least confident first, each with the served model's answer as a
pre-annotation (a ``prediction``) and the shadow's as a second one; the image
is embedded as a ``data:`` URL, or named by URL under a prefix where Label
Studio reads the capture itself (local files serving, or cloud storage).
``label_config`` is the labelling interface for the model's labels.
``import_labels`` reads Label Studio's JSON export and writes a folder of class
folders that ``visiontune train/retrain --data`` takes, with the inference ids
in ``contract.capture.LABELLED_MANIFEST``.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from contract.capture import (
    LABELLED_MANIFEST,
    Answer,
    CaptureRecord,
    LabelledCapture,
    LabelledImage,
    read_image,
    read_records,
)

# The names the labelling interface gives the image and the choice (the tasks' results use them).
IMAGE_FIELD = "image"
CHOICE_FIELD = "label"


class LabellingError(ValueError):
    """A problem with a capture, an export or an output folder; the message names it."""


def lowest_confidence_first(records: list[CaptureRecord]) -> list[CaptureRecord]:
    """One record per inference id, the least confident answers first."""
    unique = {record.inference_id: record for record in records}
    return sorted(unique.values(), key=lambda record: (record.answer.score, record.inference_id))


def export_tasks(capture: str, limit: int | None, image_url_prefix: str | None) -> list[dict]:
    """Label Studio tasks for a capture's records (at most ``limit``, lowest confidence first)."""
    records = lowest_confidence_first(list(read_records(capture)))[:limit]
    return [task(capture, record, image_url_prefix) for record in records]


def task(capture: str, record: CaptureRecord, image_url_prefix: str | None) -> dict:
    if image_url_prefix is None:
        encoded = base64.b64encode(read_image(capture, record)).decode()
        image = f"data:{record.media_type};base64,{encoded}"
    else:
        image = image_url_prefix + record.image
    predictions = [prediction(record.answer)]
    if record.shadow is not None:
        predictions.append(prediction(record.shadow))
    return {
        "data": {
            IMAGE_FIELD: image,
            "inference_id": record.inference_id,
            "capture": capture,
            "path": record.image,
            "model": record.answer.model,
            "answer": record.answer.label,
            "score": record.answer.score,
            "captured": record.time.isoformat(),
        },
        "predictions": predictions,
    }


def prediction(answer: Answer) -> dict:
    """A model's answer as a Label Studio pre-annotation."""
    return {
        "model_version": answer.model,
        "score": answer.score,
        "result": [choice(answer.label)],
    }


def choice(label: str) -> dict:
    return {
        "from_name": CHOICE_FIELD,
        "to_name": IMAGE_FIELD,
        "type": "choices",
        "value": {"choices": [label]},
    }


def label_config(labels: list[str]) -> str:
    """The labelling interface: the image and one choice per label."""
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (
        "<View>\n"
        f'  <Image name="{IMAGE_FIELD}" value="${IMAGE_FIELD}"/>\n'
        f'  <Choices name="{CHOICE_FIELD}" toName="{IMAGE_FIELD}" choice="single" '
        'showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def labels_of(records: list[CaptureRecord]) -> list[str]:
    """The labels of the models that answered: from the model store where it has them,
    else every label their answers name."""
    import bentoml

    labels: list[str] = []
    for tag in sorted({record.answer.model for record in records}):
        try:
            known = bentoml.models.get(tag).info.metadata["labels"]
        except (bentoml.exceptions.NotFound, KeyError, ValueError):
            known = sorted(
                {s.label for r in records if r.answer.model == tag for s in r.answer.top_k}
            )
        labels += [label for label in known if label not in labels]
    return labels


@dataclass
class Imported:
    """What ``import_labels`` wrote."""

    images: int
    unlabelled: int  # tasks nobody labelled (or whose labels were all cancelled)
    agreed: int  # images whose label is the served model's answer
    by_label: dict[str, int]


def import_labels(export: Path, output: Path, capture: str | None = None) -> Imported:
    """Label Studio's JSON export to ``output/LABEL/INFERENCE_ID.EXT`` and the manifest."""
    tasks = _read_export(export)
    if output.exists() and any(output.iterdir()):
        raise LabellingError(f"{output}: the output folder is not empty")
    images: list[LabelledImage] = []
    unlabelled = agreed = 0
    for index, item in enumerate(tasks):
        label = latest_label(item, export, index)
        if label is None:
            unlabelled += 1
            continue
        data = item.get("data") or {}
        inference_id = _field(data, "inference_id", export, index)
        content, extension = _image(data, capture, export, index)
        folder = output / _folder_name(label, export, index)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{inference_id}{extension}"
        path.write_bytes(content)
        images.append(
            LabelledImage(
                inference_id=inference_id, label=label, file=str(path.relative_to(output))
            )
        )
        agreed += label == data.get("answer")
    if not images:
        raise LabellingError(f"{export}: no task has a label yet ({len(tasks)} tasks)")
    manifest = LabelledCapture(source=str(export), images=images)
    (output / LABELLED_MANIFEST).write_text(json.dumps(manifest.model_dump(), indent=2))
    by_label: dict[str, int] = {}
    for image in images:
        by_label[image.label] = by_label.get(image.label, 0) + 1
    return Imported(len(images), unlabelled, agreed, dict(sorted(by_label.items())))


def latest_label(item: dict, export: Path, index: int) -> str | None:
    """The choice of the task's most recent annotation that was not cancelled."""
    annotations = [a for a in item.get("annotations") or [] if not a.get("was_cancelled")]
    annotations.sort(
        key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a.get("id", 0))
    )
    for annotation in reversed(annotations):
        for result in annotation.get("result") or []:
            choices = (result.get("value") or {}).get("choices")
            if result.get("type") == "choices" and choices:
                if len(choices) != 1:
                    raise LabellingError(
                        f"{export}: task {index} has {len(choices)} labels; one expected"
                    )
                return str(choices[0])
    return None


def _read_export(export: Path) -> list[dict]:
    try:
        tasks = json.loads(export.read_text())
    except json.JSONDecodeError as err:
        raise LabellingError(f"{export}: not JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise LabellingError(f"{export}: not a Label Studio JSON export (a list of tasks)")
    return tasks


def _field(data: dict, name: str, export: Path, index: int) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise LabellingError(
            f"{export}: task {index} has no data.{name} (tasks made by `visiontune capture export` have it)"
        )
    return value


def _image(data: dict, capture: str | None, export: Path, index: int) -> tuple[bytes, str]:
    """The task's image bytes and file extension: from its data: URL, or from the capture."""
    image = data.get(IMAGE_FIELD, "")
    if isinstance(image, str) and image.startswith("data:") and "," in image:
        header, encoded = image.split(",", 1)
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise LabellingError(f"{export}: task {index}: its image is not valid base64") from None
        media_type = header.removeprefix("data:").split(";")[0]
        return content, mimetypes.guess_extension(media_type) or ".img"
    path = _field(data, "path", export, index)
    source = capture or _field(data, "capture", export, index)
    from contract.capture import open_location

    fs, root = open_location(source)
    try:
        return fs.cat_file(f"{root}/{path}"), Path(path).suffix
    except FileNotFoundError:
        raise LabellingError(
            f"{source}/{path}: the image of task {index} is not in the capture"
        ) from None


def _folder_name(label: str, export: Path, index: int) -> str:
    if not label or label.startswith(".") or "/" in label or "\\" in label or "\0" in label:
        raise LabellingError(f"{export}: task {index}: label {label!r} can't name a folder")
    return label
