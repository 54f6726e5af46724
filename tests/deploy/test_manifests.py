"""Offline checks of deploy/k8s and deploy/grafana: render, validate, lint."""

from __future__ import annotations

import copy

import pytest
import yaml

from service.settings import Settings
from tests.support.deploy import (
    DEPLOY,
    EXTERNAL_METRICS,
    OVERLAYS,
    objects,
    one,
    promql_metrics,
    render,
    run,
    tool,
    validate_crds,
)

KUBERNETES_VERSION = "1.33.0"
MiB, GiB = 2**20, 2**30
CLUSTER_KINDS = {
    "Namespace",
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "ServiceMonitor",
    "PrometheusRule",
}
CHECKOV_CONFIG = {
    "gpu": DEPLOY / "checkov.yaml",
    "cpu": DEPLOY / "checkov.yaml",
    "local": DEPLOY / "k8s" / "overlays" / "local" / "checkov.yaml",
}


def kubernetes_validate(path) -> None:
    result = run([tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", path])
    assert result.returncode == 0, result.stdout + result.stderr


def container(target: str) -> dict:
    (found,) = one(target, "Deployment")["spec"]["template"]["spec"]["containers"]
    return found


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_cluster_overlays_hold_every_object(overlay):
    assert {o["kind"] for o in objects(overlay)} == CLUSTER_KINDS
    assert {o["metadata"].get("namespace") for o in objects(overlay)} - {None} == {"visiontune"}


def test_local_overlay_is_what_podman_kube_play_runs():
    (deployment,) = objects("local")
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] == 1
    spec = container("local")
    assert spec["image"] == "localhost/visiontune-cpu:local"
    assert spec["imagePullPolicy"] == "Never"
    (port,) = spec["ports"]
    assert port["hostIP"] == "127.0.0.1"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_validate_strict(overlay, tmp_path):
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(render(overlay))
    kubernetes_validate(path)


def test_grafana_configmap_is_valid(tmp_path):
    (configmap,) = objects("grafana")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    path = tmp_path / "grafana.yaml"
    path.write_text(render("grafana"))
    kubernetes_validate(path)


def test_strict_validation_rejects_an_unknown_field(tmp_path):
    docs = objects("cpu")
    deployment = next(o for o in docs if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    result = run([tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", path])
    assert result.returncode != 0
    assert "imagePullPolicyy" in result.stdout + result.stderr


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_servicemonitor_and_prometheusrule_match_their_crd_schemas(overlay):
    result = validate_crds(objects(overlay))
    assert result.returncode == 0, result.stderr
    assert "checked ServiceMonitor/visiontune" in result.stdout
    assert "checked PrometheusRule/visiontune" in result.stdout


def test_crd_validation_rejects_a_bad_object():
    docs = copy.deepcopy(objects("cpu"))
    monitor = next(o for o in docs if o["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    rule = next(o for o in docs if o["kind"] == "PrometheusRule")
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    result = validate_crds(docs)
    assert result.returncode == 1
    assert "interval" in result.stderr and "expr" in result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_passes(overlay, tmp_path):
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(render(overlay))
    result = run(
        [
            tool("checkov"),
            "--file", path,
            "--framework", "kubernetes",
            "--config-file", CHECKOV_CONFIG[overlay],
            "--compact", "--quiet", "--skip-download",
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_is_hardened_and_probed(overlay):
    deployment = one(overlay, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    spec = container(overlay)
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    security = spec["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/livez"
    startup = spec["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(spec["resources"][kind])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_bentoml_writes_only_to_the_tmp_volume(overlay):
    spec = container(overlay)
    env = {e["name"]: e["value"] for e in spec["env"]}
    (mount,) = spec["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    for name in ("BENTOML_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR"):
        assert env[name].startswith("/tmp/")


def test_gpu_overlay_takes_one_gpu_on_gpu_nodes():
    spec = container("gpu")
    assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod = one("gpu", "Deployment")["spec"]["template"]["spec"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    (metric,) = one("gpu", "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "bentoml_service_request_in_progress"


def test_cpu_overlay_requests_no_gpu():
    assert "nvidia.com/gpu" not in str(container("cpu")["resources"])


def test_selectors_match_the_pods():
    labels = one("cpu", "Deployment")["spec"]["template"]["metadata"]["labels"]
    for kind, path in [
        ("Service", ["spec", "selector"]),
        ("PodDisruptionBudget", ["spec", "selector", "matchLabels"]),
        ("ServiceMonitor", ["spec", "selector", "matchLabels"]),
        ("NetworkPolicy", ["spec", "podSelector", "matchLabels"]),
    ]:
        selector = one("cpu", kind)
        for key in path:
            selector = selector[key]
        assert selector and selector.items() <= labels.items(), kind


def test_alerts_cover_errors_latency_confidence_traffic_and_drift():
    groups = one("cpu", "PrometheusRule")["spec"]["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    assert {
        "VisiontuneHighErrorRate",
        "VisiontuneHighLatencyP99",
        "VisiontuneLowConfidenceSurge",
        "VisiontuneNoTraffic",
        "VisiontuneLabelDrift",
    } <= alerts


def test_promql_parses_and_names_only_known_metrics():
    used = promql_metrics()
    ours = {name for name in used if name.startswith(("bentoml_service_", "visiontune_"))}
    assert set(used) - ours <= EXTERNAL_METRICS
    assert "bentoml_service_adaptive_batch_size_bucket" in used
    assert "visiontune_label_drift" in used


def container_settings(overlay: str) -> Settings:
    return Settings.from_env({e["name"]: e["value"] for e in container(overlay)["env"]})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_stopping_pod_finishes_its_requests(overlay):
    pod = one(overlay, "Deployment")["spec"]["template"]["spec"]
    pause = container(overlay)["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep" and int(pause[1]) >= 5
    timeout = container_settings(overlay).timeout_s
    assert pod["terminationGracePeriodSeconds"] >= int(pause[1]) + timeout


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_the_autoscaler_owns_the_replica_count(overlay):
    assert "replicas" not in one(overlay, "Deployment")["spec"]
    assert one(overlay, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2


# What the formula can't read from the manifests (README, "Memory"): the runtime and
# weights of a ViT-base (on a GPU also the CUDA libraries), and the activations per image
# of a batch on the CPU (on a GPU they live in GPU memory).
MODEL_BYTES = {"gpu": 2 * GiB, "cpu": int(0.9 * GiB), "local": int(0.7 * GiB)}
BATCH_BYTES_PER_IMAGE = {"gpu": 0, "cpu": 10 * MiB, "local": 10 * MiB}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_memory_limit_holds_the_stated_ceiling(overlay):
    resources = container(overlay)["resources"]
    cpus = int(resources["limits"]["cpu"])
    ceiling = container_settings(overlay).memory_ceiling(
        MODEL_BYTES[overlay], BATCH_BYTES_PER_IMAGE[overlay], cpus
    )
    assert ceiling <= gibibytes(resources["limits"]["memory"]) * GiB
    assert gibibytes(resources["requests"]["memory"]) * GiB >= ceiling * 0.5


def gibibytes(quantity: str) -> float:
    assert quantity.endswith("Gi"), quantity
    return float(quantity.removesuffix("Gi"))
