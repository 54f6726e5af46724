"""Capture to Label Studio tasks and back to a labelled folder (Label Studio itself runs in
tests/e2e/test_capture_loop.py); the shadow's figures from a capture and from metrics."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ElementTree

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from contract.capture import CaptureError, captured_ids
from service.capture import CaptureWriter
from tests.support.builders import captured
from tests.support.cli import assert_one_line_error, visiontune
from tests.unit.test_capture import png
from training.config import TrainConfig
from training.data import load_labelled
from visiontune.labelling import (
    LabellingError,
    choice,
    export_tasks,
    import_labels,
    label_config,
)
from visiontune.lifecycle.gate import LiveRules, check_agreement
from visiontune.lifecycle.shadow import _stats, from_capture, parse_exposition


@pytest.fixture
def capture(tmp_path) -> str:
    """Five captured digits, scored 0.9, 0.2, 0.6, 0.4, 0.8; a shadow answered three."""
    url = str(tmp_path / "capture")
    writer = CaptureWriter(url, 10**9).start()
    scores = [0.9, 0.2, 0.6, 0.4, 0.8]
    for i, score in enumerate(scores):
        shadow = ("digits:v2", str(i) if i != 1 else "7", 0.7) if i < 3 else None
        writer.offer(captured(f"id-{i}", str(i), score, image=png(i, i), shadow=shadow))
    writer.close()
    return url


def label_studio_export(tasks: list[dict], labels: dict[str, str | None]) -> list[dict]:
    """What Label Studio's JSON export holds once ``labels`` (by inference id) were given:
    the task, an annotation (a cancelled one for None), and its predictions by id."""
    exported = []
    for number, task in enumerate(tasks, 1):
        label = labels.get(task["data"]["inference_id"], "")
        annotations = []
        if label != "":
            result = (
                [] if label is None else [{**choice(label), "id": f"r{number}", "origin": "manual"}]
            )
            annotations.append(
                {
                    "id": number,
                    "result": result,
                    "was_cancelled": label is None,
                    "updated_at": "2026-05-01T13:00:00Z",
                }
            )
        predictions = list(range(2 * number, 2 * number + len(task["predictions"])))
        exported.append(
            {"id": number, **task, "annotations": annotations, "predictions": predictions}
        )
    return exported


def test_tasks_come_least_confident_first_with_the_answers_as_predictions(capture):
    tasks = export_tasks(capture, limit=3, image_url_prefix=None)
    assert [t["data"]["inference_id"] for t in tasks] == ["id-1", "id-3", "id-2"]
    first = tasks[0]
    media, encoded = first["data"]["image"].split(",", 1)
    assert media == "data:image/png;base64"
    assert base64.b64decode(encoded) == png(1, 1)
    served, shadow = first["predictions"]
    assert served["model_version"] == "digits:v1" and served["score"] == 0.2
    assert served["result"][0]["value"] == {"choices": ["1"]}
    assert shadow["model_version"] == "digits:v2"
    assert shadow["result"][0]["value"] == {"choices": ["7"]}
    assert len(tasks[1]["predictions"]) == 1  # no shadow answer for id-3
    named = export_tasks(capture, limit=1, image_url_prefix="/data/local-files/?d=capture/")
    assert named[0]["data"]["image"] == "/data/local-files/?d=capture/" + named[0]["data"]["path"]


def test_the_labelling_interface_names_every_label():
    config = ElementTree.fromstring(label_config(["cat", 'a "quoted" <label>', "猫"]))
    (image,) = config.iter("Image")
    (choices,) = config.iter("Choices")
    assert choices.get("toName") == image.get("name") == "image"
    assert [c.get("value") for c in choices.iter("Choice")] == ["cat", 'a "quoted" <label>', "猫"]


def test_an_export_becomes_a_labelled_folder_that_training_reads(capture, tmp_path):
    tasks = export_tasks(capture, limit=None, image_url_prefix=None)
    labels = {"id-0": "0", "id-1": "1", "id-2": "2", "id-3": None}  # id-3 cancelled, id-4 open
    export = tmp_path / "export.json"
    export.write_text(json.dumps(label_studio_export(tasks, labels)))
    imported = import_labels(export, tmp_path / "labelled")
    assert (imported.images, imported.unlabelled, imported.agreed) == (3, 2, 3)
    assert (tmp_path / "labelled" / "1" / "id-1.png").read_bytes() == png(1, 1)
    assert sorted(captured_ids(str(tmp_path / "labelled"))) == ["id-0", "id-1", "id-2"]
    config = TrainConfig(data=str(tmp_path / "labelled"), backbone="-")
    examples = load_labelled(config, ["0", "1", "2"])
    assert sorted((path.name, label) for path, label in examples) == [
        ("id-0.png", 0),
        ("id-1.png", 1),
        ("id-2.png", 2),
    ]
    with pytest.raises(LabellingError, match="not empty"):
        import_labels(export, tmp_path / "labelled")


def test_tasks_that_name_their_images_read_them_from_the_capture(capture, tmp_path):
    tasks = export_tasks(capture, limit=None, image_url_prefix="s3://elsewhere/")
    export = tmp_path / "export.json"
    export.write_text(json.dumps(label_studio_export(tasks, {"id-4": "4"})))
    import_labels(export, tmp_path / "labelled")
    assert (tmp_path / "labelled" / "4" / "id-4.png").read_bytes() == png(4, 4)


def test_bad_exports_are_named(capture, tmp_path):
    export = tmp_path / "export.json"
    export.write_text("{not json")
    result = visiontune("capture", "import", export, "--output", tmp_path / "out")
    assert_one_line_error(result, f"{export}: not JSON")
    export.write_text(json.dumps(label_studio_export(export_tasks(capture, None, None), {})))
    with pytest.raises(LabellingError, match="no task has a label yet \\(5 tasks\\)"):
        import_labels(export, tmp_path / "out")
    tasks = label_studio_export(export_tasks(capture, None, None), {"id-0": "../up"})
    export.write_text(json.dumps(tasks))
    with pytest.raises(LabellingError, match="label '../up' can't name a folder"):
        import_labels(export, tmp_path / "out")
    with pytest.raises(CaptureError, match="no such capture"):
        export_tasks(str(tmp_path / "none"), None, None)


def test_capture_export_command_writes_tasks_and_the_interface(capture, tmp_path):
    out, config = tmp_path / "tasks.json", tmp_path / "config.xml"
    result = visiontune(
        "capture",
        "export",
        "--to",
        "label-studio",
        capture,
        out,
        "--limit",
        2,
        "--label-config",
        config,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 2 tasks" in result.stdout
    assert len(json.loads(out.read_text())) == 2
    labels = [c.get("value") for c in ElementTree.fromstring(config.read_text()).iter("Choice")]
    assert labels == ["0", "1", "2", "3", "4"]  # digits:v1 is not in this store: its answers


def test_shadow_figures_from_a_capture(capture):
    (pair,) = from_capture(capture, low_confidence=0.5)
    assert (pair.model, pair.shadow, pair.compared, pair.agreed) == ("digits:v1", "digits:v2", 3, 2)
    assert pair.served.mean_confidence == pytest.approx((0.9 + 0.2 + 0.6) / 3)
    assert pair.served.low_confidence_share == pytest.approx(1 / 3)
    assert pair.shadowing.mean_confidence == pytest.approx(0.7)
    assert pair.served.ms_per_image == pytest.approx(1000 * 0.02 / 4)


def test_shadow_figures_from_metrics_sum_over_workers():
    registry = CollectorRegistry()
    compared = Counter("visiontune_shadow_compared", "", ["model", "shadow"], registry=registry)
    agreed = Counter("visiontune_shadow_agreed", "", ["model", "shadow"], registry=registry)
    confidence = Histogram(
        "visiontune_shadow_confidence", "", ["model", "shadow", "answered_by"], registry=registry
    )
    compared.labels("a:1", "a:2").inc(40)
    agreed.labels("a:1", "a:2").inc(36)
    for _ in range(40):
        confidence.labels("a:1", "a:2", "model").observe(0.8)
        confidence.labels("a:1", "a:2", "shadow").observe(0.6)
    text = generate_latest(registry).decode()
    (pair,) = _stats(parse_exposition(text + text), "two workers")  # the same counts twice
    assert (pair.compared, pair.agreed, pair.agreement) == (80, 72, 0.9)
    assert pair.served.mean_confidence == pytest.approx(0.8)
    assert pair.shadowing.mean_confidence == pytest.approx(0.6)


def test_agreement_must_rest_on_enough_images():
    registry = CollectorRegistry()
    Counter("visiontune_shadow_compared", "", ["model", "shadow"], registry=registry).labels(
        "a:1", "a:2"
    ).inc(50)
    Counter("visiontune_shadow_agreed", "", ["model", "shadow"], registry=registry).labels(
        "a:1", "a:2"
    ).inc(45)
    evidence = _stats(parse_exposition(generate_latest(registry).decode()), "metrics")
    rules = LiveRules(min_shadow_agreement=0.9, min_shadow_images=50)
    assert check_agreement("a:1", "a:2", rules, evidence, "metrics").passed
    stricter = LiveRules(min_shadow_agreement=0.95, min_shadow_images=50)
    assert (
        "below the required 0.9500" in check_agreement("a:1", "a:2", stricter, evidence, "m").reason
    )
    more = LiveRules(min_shadow_agreement=0.5, min_shadow_images=51)
    assert not check_agreement("a:1", "a:2", more, evidence, "m").passed
    unknown = check_agreement("a:1", "a:3", rules, evidence, "m")
    assert not unknown.passed and "answered 0 live images as the shadow of a:1" in unknown.reason
