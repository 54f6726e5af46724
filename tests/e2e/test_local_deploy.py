"""End to end: train -> bento -> OCI image -> `podman kube play` -> classify over HTTP -> tear down.

The same scripts as `make image`, `make deploy-local` and `make undeploy-local`
run here, with their own image tag and a free port, so the image that `make
deploy-local` runs is left alone; the pod has the same name, so a local
deployment running at the time is replaced and removed. The base image is
built once and kept between runs.
Every metric named by the Grafana dashboard and the alert rules must be
exported by the running container, and a throwaway Prometheus scraping the pod
runs every dashboard query (each panel shows data) and every alert rule.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import REPO
from tests.support.builders import digits_classifier_config
from tests.support.deploy import DEPLOY, EXTERNAL_METRICS, promql_metrics
from tests.support.needs import need
from tests.support.servers import free_port
from visiontune.client import ClientError, wait_until_ready

# A cold machine builds the base image and every image layer: minutes on 2 cores.
pytestmark = [pytest.mark.e2e, pytest.mark.podman, pytest.mark.timeout(1800)]

IMAGE = "localhost/visiontune-cpu:e2e"
POD = "visiontune-pod-0"
CONTAINER = f"{POD}-classifier"
HELD_OUT = 30


def script(name: str, timeout: int, **env: str) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = subprocess.run(
        [REPO / "deploy" / "local" / name],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(f"{name}: {time.monotonic() - started:.0f}s")
    assert result.returncode == 0, (
        f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def digits_config(make_backbone, tmp_path_factory):
    backbone = make_backbone("resnet", image_size=16)
    run = tmp_path_factory.mktemp("e2e-run")
    return digits_classifier_config(backbone, "e2e-digits", run, epochs=6)


@pytest.fixture(scope="module")
def trained_tag(digits_config) -> str:
    from training.train import train

    return str(train(digits_config).tag)


@pytest.fixture(scope="module")
def image(trained_tag) -> str:
    script("build-image.sh", timeout=1500, VISIONTUNE_MODEL=trained_tag, IMAGE=IMAGE)
    return IMAGE


@pytest.fixture(scope="module")
def url(image):
    port = free_port()
    try:
        script("deploy.sh", timeout=400, IMAGE=image, LOCAL_PORT=str(port), READY_TIMEOUT="300")
        yield f"http://127.0.0.1:{port}"
    finally:
        script("undeploy.sh", timeout=120)
        assert subprocess.run(["podman", "pod", "exists", POD]).returncode == 1


@pytest.fixture(scope="module")
def held_out(digits_config):
    """Held-out digits as PNG bytes, with their true label and the in-process prediction."""
    from training.data import load_data
    from training.store import load_predictor

    data = load_data(digits_config)
    predictor, metadata, _ = load_predictor(f"{digits_config.name}:latest")
    examples = []
    for image, truth in data.test[:HELD_OUT]:
        probabilities = predictor.classify([image.convert("RGB")])[0]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        local = (metadata.labels[int(probabilities.argmax())], float(probabilities.max()))
        examples.append((buffer.getvalue(), data.labels[truth], local))
    return examples


def classify(url: str, images: list[bytes]) -> httpx.Response:
    files = [("images", (f"digit-{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return httpx.post(f"{url}/classify", files=files, timeout=60)


def test_container_classifies_held_out_digits(url, held_out, trained_tag):
    response = classify(url, [png for png, _, _ in held_out])
    assert response.status_code == 200, response.text
    predictions = response.json()
    assert {p["model"] for p in predictions} == {trained_tag}
    right = sum(p["label"] == truth for p, (_, truth, _) in zip(predictions, held_out, strict=True))
    assert right >= 0.9 * len(held_out), predictions
    for prediction, (_, _, (label, score)) in zip(predictions, held_out, strict=True):
        if score > 0.6:  # not a near tie: the container must agree with in-process torch
            assert prediction["label"] == label


def test_one_digit_per_request_gets_its_label(url, held_out):
    confident = [(png, truth) for png, truth, (label, score) in held_out if label == truth][:3]
    for png, truth in confident:
        response = classify(url, [png])
        assert response.status_code == 200, response.text
        assert response.json()[0]["label"] == truth


def test_bad_input_is_a_4xx_and_the_pod_keeps_serving(url, held_out):
    response = httpx.post(
        f"{url}/classify", files=[("images", ("notes.txt", b"not an image", "text/plain"))]
    )
    assert 400 <= response.status_code < 500
    assert classify(url, [held_out[0][0]]).status_code == 200


def test_every_metric_in_dashboard_and_alerts_is_exported(url, held_out):
    classify(url, [png for png, _, _ in held_out[:4]])
    httpx.post(f"{url}/classify", files=[("images", ("bad.png", b"", "image/png"))])
    text = httpx.get(f"{url}/metrics", timeout=30).text
    exported = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    missing = {name: where for name, where in promql_metrics().items() if name not in exported}
    assert set(missing) <= EXTERNAL_METRICS, json.dumps(missing, indent=2)


def test_every_visiontune_series_names_the_model(url, trained_tag):
    text = httpx.get(f"{url}/metrics", timeout=30).text
    ours = [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("visiontune_")
    ]
    assert ours and {sample.labels.get("model") for sample in ours} == {trained_tag}


def test_pod_runs_as_non_root_on_a_read_only_root(url):
    inspect = subprocess.run(
        ["podman", "inspect", CONTAINER, "--format", "json"], capture_output=True, text=True
    )
    (info,) = json.loads(inspect.stdout)
    assert info["Config"]["User"].split(":")[0] == "1034"
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert not info["EffectiveCaps"]
    check = ["podman", "exec", CONTAINER, "sh", "-c", "id -u && ! touch /bento-write-test"]
    result = subprocess.run(check, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "1034", result.stderr


def test_podman_run_serves_the_image(image, held_out):
    port = free_port()
    name = f"visiontune-e2e-run-{port}"
    command = ["podman", "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:3000"]
    command += ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]
    command += ["-e", "BENTOML_HOME=/tmp/bentoml", image, "serve"]
    subprocess.run(command, check=True, capture_output=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        png, truth, (label, _) = next(e for e in held_out if e[1] == e[2][0])
        assert classify(url, [png]).json()[0]["label"] == truth
        assert "visiontune_predictions_total" in httpx.get(f"{url}/metrics").text
    finally:
        subprocess.run(["podman", "stop", "-t", "10", name], capture_output=True)


def wait_ready(url: str, timeout: float = 180, path: str = "/readyz") -> None:
    try:
        wait_until_ready(url, timeout, path=path, interval=1)
    except ClientError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def prometheus(url, tmp_path_factory):
    """Prometheus scraping the pod every second with the alert rules loaded; the
    target carries the labels the Prometheus Operator would give it."""
    need(shutil.which("prometheus") is not None, "prometheus (`make prometheus`)")
    folder = tmp_path_factory.mktemp("prometheus")
    rules = folder / "rules.yaml"
    rule = yaml.safe_load((DEPLOY / "k8s" / "base" / "prometheusrule.yaml").read_text())
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    check = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    config = folder / "prometheus.yaml"
    config.write_text(yaml.safe_dump(scrape_config(url, rules)))
    port = free_port()
    command = ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}"]
    command += [f"--web.listen-address=127.0.0.1:{port}"]
    with (folder / "prometheus.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", path="/-/ready")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def scrape_config(url: str, rules) -> dict:
    target = {
        "targets": [url.removeprefix("http://")],
        "labels": {"namespace": "visiontune", "service": "visiontune", "pod": POD},
    }
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "visiontune", "static_configs": [target]}],
    }


def dashboard_panels() -> list[dict]:
    dashboard = json.loads((DEPLOY / "grafana" / "visiontune.json").read_text())
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def as_prometheus_sees_it(expr: str) -> str:
    """Grafana's variables as Grafana would fill them for "All" namespaces, services, models."""
    for variable in ("$namespace", "$service", "$model"):
        expr = expr.replace(variable, ".*")
    return expr.replace("$__rate_interval", "1m")


def query(prometheus: str, expr: str) -> list:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=30)
    assert response.status_code == 200, f"{expr}: {response.text}"
    return response.json()["data"]["result"]


def send_traffic(url: str, held_out, seconds: int = 8) -> None:
    """Good and bad requests spread over a few scrapes, so rate() has points."""
    images = [png for png, _, _ in held_out[:4]]
    for _ in range(seconds):
        classify(url, images)
        httpx.post(f"{url}/classify", files=[("images", ("bad.png", b"", "image/png"))])
        time.sleep(1)


def test_every_dashboard_panel_shows_data_and_every_alert_evaluates(url, prometheus, held_out):
    send_traffic(url, held_out)
    time.sleep(3)
    empty = []
    for panel in dashboard_panels():
        exprs = [as_prometheus_sees_it(target["expr"]) for target in panel["targets"]]
        results = [query(prometheus, expr) for expr in exprs]
        if not any(results) and "DCGM" not in " ".join(exprs):
            empty.append(panel["title"])
    assert not empty, f"panels without data: {empty}"
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=30).json()["data"]["groups"]
    health = {
        rule["name"]: (rule["health"], rule.get("lastError")) for g in rules for rule in g["rules"]
    }
    assert health and all(state == "ok" for state, _ in health.values()), health
