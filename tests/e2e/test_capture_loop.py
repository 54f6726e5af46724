"""End to end, live traffic back into training: capture, label in Label Studio, shadow,
retrain, promote, switch with no failed request.

v1 serves (production) with capture on and v2 (a candidate) as its shadow, behind
the local release's nginx. Real digits go in as files and as base64; the capture
must hold one record and the exact bytes per image, with the answer and the
shadow's, under the inference ids the answers carry; /metrics must show the
shadow's agreement. The capture goes to a real Label Studio as tasks, every
image is labelled through its API, its export comes back as a labelled folder.
Promotion of the shadow on live evidence it lacks is refused; a retrain on the
captured images passes the gate and is promoted, and a server for the new
production model takes over behind nginx while a client keeps sending: every
answer a 200, from v1 then from v3.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import bentoml
import httpx
import pytest

from contract.capture import read_records
from contract.stages import resolve
from tests.support.builders import CLASSES, IMAGE_SIZE, digit_folder, lifecycle_v1_config
from tests.support.cli import visiontune
from tests.support.images import digit_images
from tests.support.label_studio import label_studio
from tests.support.servers import free_port, serving
from tests.support.traffic import Traffic, assert_switched, served_tag
from visiontune.labelling import choice
from visiontune.lifecycle import registry
from visiontune.lifecycle.proxy import Proxy

pytestmark = [pytest.mark.e2e, pytest.mark.label_studio, pytest.mark.timeout(1800)]

PER_CLASS = 10  # live images sent per class


def ok(result) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def live_images() -> list[tuple[str, bytes]]:
    """Unseen digits of each class as PNG files: (true label, bytes)."""
    images = []
    for label in CLASSES:
        for image in digit_images(int(label), PER_CLASS, start=120):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            images.append((label, buffer.getvalue()))
    return images


def send(url: str, batch: list[bytes], as_json: bool) -> httpx.Response:
    headers = {"user-agent": "capture-loop-test"}
    if as_json:
        body = {"images": [base64.b64encode(data).decode() for data in batch]}
        return httpx.post(f"{url}/classify_json", json=body, headers=headers, timeout=60)
    files = [("images", (f"digit-{i}.png", data, "image/png")) for i, data in enumerate(batch)]
    return httpx.post(f"{url}/classify", files=files, headers=headers, timeout=60)


def wait_for_records(capture: str, count: int) -> list:
    deadline = time.monotonic() + 60
    while True:
        try:
            records = list(read_records(capture))
        except ValueError:  # no capture folder yet
            records = []
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.25)


def test_capture_label_shadow_retrain_promote_switch(tmp_path, make_backbone):
    from training.train import train

    started = time.monotonic()
    v1_config = lifecycle_v1_config(tmp_path, make_backbone("resnet", IMAGE_SIZE), "e2e-loop")
    name = v1_config.name
    v1 = str(train(v1_config).tag)
    registry.promote(v1, "the first model")
    v2_config = v1_config.model_copy(
        update={"data": str(digit_folder(tmp_path / "v2", 20, start=20)), "epochs": 4,
                "output_dir": tmp_path / "v2-run"}
    )  # fmt: skip
    v2 = str(train(v2_config).tag)
    held_out = digit_folder(tmp_path / "held-out", 10, start=160)
    capture = str(tmp_path / "capture")
    env = {
        "VISIONTUNE_MODEL": f"{name}@production",
        "VISIONTUNE_SHADOW": f"{name}@candidate",
        "VISIONTUNE_SHADOW_RATE": "1",
        "VISIONTUNE_CAPTURE": capture,
        "VISIONTUNE_CAPTURE_RATE": "1",
        "VISIONTUNE_ACCESS_LOG": "1",
    }
    for home in ("home-v1", "home-v3"):
        (tmp_path / home).mkdir()
    proxy = Proxy(tmp_path / "nginx", free_port(), drain_seconds=30)
    url = f"http://127.0.0.1:{proxy.port}"
    try:
        with serving(tmp_path / "home-v1", env) as first:
            proxy.switch(first.port)
            answers, truth = classify_live(url)
            check_capture(capture, answers, truth, v1, v2)
            check_access_log(first, answers)
            check_shadow_metrics(first, capture, len(answers), v1, v2)
            labelled = label_in_label_studio(tmp_path, capture, truth)
            refuse_promotion_without_enough_evidence(tmp_path, name, v2, first.url, labelled)
            v3 = retrain_on_captures(tmp_path, name, labelled, held_out, truth)
            with serving(tmp_path / "home-v3", {"VISIONTUNE_MODEL": f"{name}@production"}) as new:
                with Traffic(url) as traffic:
                    time.sleep(1)
                    proxy.switch(new.port)
                    proxy.wait_drained()
                    time.sleep(1)
                assert_switched(traffic, v1, v3)
                assert served_tag(url) == v3
    finally:
        proxy.stop()
    print(f"capture loop end to end: {time.monotonic() - started:.0f}s")


def classify_live(url: str) -> tuple[list[dict], dict[str, str]]:
    """Every live image, four per request, files and base64 in turn: the answers (in order)
    and the true label by inference id. Each answer's id is its request's id (the
    X-Inference-Id header) and its index."""
    images = live_images()
    answers, truth = [], {}
    for start in range(0, len(images), 4):
        batch = images[start : start + 4]
        response = send(url, [data for _, data in batch], as_json=start % 8 == 4)
        assert response.status_code == 200, response.text
        request_id = response.headers["x-inference-id"]
        for index, (answer, (label, data)) in enumerate(zip(response.json(), batch, strict=True)):
            assert answer["inference_id"] == f"{request_id}-{index}"
            answers.append({**answer, "bytes": data})
            truth[answer["inference_id"]] = label
    assert len(truth) == len(images)
    return answers, truth


def check_capture(capture: str, answers: list[dict], truth: dict, v1: str, v2: str) -> None:
    records = {r.inference_id: r for r in wait_for_records(capture, len(answers))}
    assert set(records) == set(truth)
    for answer in answers:
        record = records[answer["inference_id"]]
        assert record.answer.model == v1 == answer["model"]
        assert (record.answer.label, record.answer.score) == (answer["label"], answer["score"])
        assert [s.label for s in record.answer.top_k] == [s["label"] for s in answer["top_k"]]
        assert record.shadow is not None and record.shadow.model == v2
        assert record.reason == "sampled"
        assert record.headers["user-agent"] == "capture-loop-test"
        assert (Path(capture) / record.image).read_bytes() == answer["bytes"]  # as it was sent
        assert record.media_type == "image/png"


def check_access_log(server, answers: list[dict]) -> None:
    request_ids = {answer["inference_id"].rsplit("-", 1)[0] for answer in answers}
    log = server.log.read_text()
    assert all(request_id in log for request_id in request_ids)


def check_shadow_metrics(server, capture: str, sent: int, v1: str, v2: str) -> None:
    """/metrics counts every image the shadow answered, and the agreement the captures show."""
    deadline = time.monotonic() + 30
    pair = (("model", v1), ("shadow", v2))
    while True:
        samples = server.metrics()
        compared = samples["visiontune_shadow_compared_total"].get(pair, 0)
        if compared >= sent or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert compared == sent
    agreed = samples["visiontune_shadow_agreed_total"].get(pair, 0)
    records = list(read_records(capture))
    assert agreed == sum(r.answer.label == r.shadow.label for r in records)
    report = ok(visiontune("shadow", "report", "--metrics", f"{server.url}/metrics"))
    assert f"top-1 agreement {agreed / compared:.4f} on {sent} images" in report


def label_in_label_studio(tmp_path, capture: str, truth: dict):
    """Tasks into a real Label Studio, every one labelled with its true label through the
    API, the export back as a labelled folder."""
    tasks, config = tmp_path / "tasks.json", tmp_path / "interface.xml"
    ok(
        visiontune(
            "capture", "export", "--to", "label-studio", capture, tasks, "--label-config", config
        )
    )
    exported = json.loads(tasks.read_text())
    scores = [task["predictions"][0]["score"] for task in exported]
    assert scores == sorted(scores) and len(exported) == len(truth)  # least confident first
    with label_studio(tmp_path / "label-studio") as studio:
        project = studio.create_project("visiontune live traffic", config.read_text())
        assert studio.import_tasks(project, exported) == len(truth)
        for task in studio.tasks(project):
            studio.annotate(task["id"], [choice(truth[task["data"]["inference_id"]])])
        export = tmp_path / "label-studio-export.json"
        export.write_text(json.dumps(studio.export(project)))
    labelled = tmp_path / "labelled"
    imported = ok(visiontune("capture", "import", export, "--output", labelled))
    assert f"wrote {len(truth)} labelled images" in imported
    for inference_id, label in truth.items():
        assert (labelled / label / f"{inference_id}.png").exists()
    return labelled


def refuse_promotion_without_enough_evidence(tmp_path, name, v2, server_url, labelled):
    """The shadow answered every live image; asking for one more is refused (exit 3) after
    the labelled captures were scored, and nothing changes."""
    before = str(resolve(f"{name}@production"))
    result = visiontune(
        "promote", v2, "--labelled-capture", labelled,
        "--min-shadow-agreement", "0", "--min-shadow-images", len(list(labelled.rglob("*.png"))) + 1,
        "--metrics", f"{server_url}/metrics", "--output-dir", tmp_path / "promote-v2",
    )  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert "labelled captures: " in result.stdout  # scored, whatever its verdict
    required = len(list(labelled.rglob("*.png"))) + 1
    assert f"shadow: refused: {v2} answered {required - 1} live images" in result.stdout
    assert f"fewer than the {required} required" in result.stdout
    assert (tmp_path / "promote-v2" / "labelled-capture" / "gate.md").exists()
    assert str(resolve(f"{name}@production")) == before


def retrain_on_captures(tmp_path, name, labelled, held_out, truth) -> str:
    """A challenger trained on the labelled captures (with v1's data), gated, promoted; its
    lineage names every inference id it learnt from.

    Tiny models scored on 40 held-out images move by a few points from run to run: the
    gate allows that much (its refusals are tested in tests/e2e/test_lifecycle.py)."""
    retrained = ok(
        visiontune(
            "retrain",
            "--data",
            labelled,
            "--champion",
            f"{name}@production",
            "--eval-data",
            held_out,
            "--epochs",
            25,  # a tenth of a second each; at 5 this tiny model is still near its start
            "--patience",
            25,  # early stopping on 10 validation images can keep an epoch-2 model
            "--min-delta",
            "-0.1",
            "--max-class-drop",
            "0.3",
            "--output-dir",
            tmp_path / "retrain",
        )  # fmt: skip
    )
    v3 = retrained.split("challenger ", 1)[1].split()[0]
    assert str(resolve(f"{name}@production")) == v3
    lineage = bentoml.models.get(v3).info.metadata["lineage"]
    assert sorted(lineage["captured"][str(labelled)]) == sorted(truth)
    return v3
