"""Offline checks of deploy/k8s and deploy/grafana: render, validate, lint."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from service.settings import Settings
from tests.support.deploy import (
    DEPLOY,
    EXTERNAL_METRICS,
    KUBERNETES_VERSION,
    OVERLAYS,
    checkov_dockerfile,
    checkov_manifests,
    objects,
    one,
    promql_metrics,
    render,
    run,
    tool,
    validate_crds,
)

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
    "canary": DEPLOY / "checkov.yaml",
    "canary-mirror": DEPLOY / "checkov.yaml",
}
# Which alert each canary analysis metric runs.
ANALYSIS_ALERTS = {
    "error-rate": "VisiontuneHighErrorRate",
    "latency-p99": "VisiontuneHighLatencyP99",
    "low-confidence-share": "VisiontuneLowConfidenceSurge",
}
IN_NAMESPACE = re.compile(
    r"^\((?P<expr>.*)\)\s*and on \(namespace\) "
    r'label_replace\(vector\(1\), "namespace", "\{\{args\.namespace\}\}", "", ""\)$',
    re.DOTALL,
)


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
    result = checkov_manifests(path, CHECKOV_CONFIG[overlay])
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
    (writable,) = [m for m in spec["volumeMounts"] if not m.get("readOnly")]
    assert writable["mountPath"] == "/tmp"
    for name in ("BENTOML_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR"):
        assert env[name].startswith("/tmp/")


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_the_api_token_comes_from_an_optional_secret_file(overlay):
    spec = container(overlay)
    env = {e["name"]: e["value"] for e in spec["env"]}
    (mount,) = [m for m in spec["volumeMounts"] if m["name"] == "api-token"]
    assert mount["readOnly"] is True
    assert env["VISIONTUNE_API_TOKEN_FILE"] == mount["mountPath"] + "/token"
    assert "VISIONTUNE_API_TOKEN" not in env  # a file, not a variable others can read
    pod = one(overlay, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-token"]
    assert volume["secret"] == {
        "secretName": "visiontune-api-token",
        "optional": True,
        "defaultMode": 0o440,
    }


def test_the_local_overlay_runs_without_a_token():
    spec = container("local")
    assert "VISIONTUNE_API_TOKEN_FILE" not in {e["name"] for e in spec["env"]}
    pod = one("local", "Deployment")["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_only_the_ingress_controller_and_monitoring_reach_the_pods(overlay):
    policy = one(overlay, "NetworkPolicy")["spec"]
    (rule,) = policy["ingress"]
    sources = {
        s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in rule["from"]
    }
    assert sources == {"ingress-nginx", "monitoring"}
    assert all(set(s) == {"namespaceSelector"} for s in rule["from"])
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert policy["policyTypes"] == ["Ingress", "Egress"]


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


def test_canary_overlay_runs_the_deployment_template_as_a_rollout():
    docs = objects("canary")
    assert {o["kind"] for o in docs} == CLUSTER_KINDS | {"Rollout", "AnalysisTemplate"}
    assert {o["metadata"].get("namespace") for o in docs} - {None} == {"visiontune"}
    deployment = one("canary", "Deployment")
    assert deployment["spec"]["replicas"] == 0
    rollout = one("canary", "Rollout")["spec"]
    assert rollout["workloadRef"]["name"] == deployment["metadata"]["name"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert rollout["selector"]["matchLabels"].items() <= labels.items()
    target = one("canary", "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Rollout", "visiontune")
    canary = rollout["strategy"]["canary"]
    assert canary["maxUnavailable"] == 0
    (template,) = canary["analysis"]["templates"]
    assert template["templateName"] == one("canary", "AnalysisTemplate")["metadata"]["name"]
    assert [step["setWeight"] for step in canary["steps"] if "setWeight" in step] == [25, 50]


def split_alert(expr: str) -> tuple[str, str]:
    """An alert expression as (what it measures, the threshold it compares with)."""
    measured, threshold = expr.rsplit(">", 1)
    return " ".join(measured.split()), threshold.strip()


def test_canary_analysis_runs_the_alert_expressions():
    groups = one("canary", "PrometheusRule")["spec"]["groups"]
    alerts = {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}
    metrics = one("canary", "AnalysisTemplate")["spec"]["metrics"]
    assert {metric["name"] for metric in metrics} == set(ANALYSIS_ALERTS)
    for metric in metrics:
        measured, threshold = split_alert(alerts[ANALYSIS_ALERTS[metric["name"]]])
        match = IN_NAMESPACE.match(metric["provider"]["prometheus"]["query"].strip())
        assert match, metric["name"]
        assert " ".join(match["expr"].split()) == measured, metric["name"]
        assert metric["failureCondition"] == f"any(result, {{# > {threshold}}})"


def test_crd_validation_checks_rollout_and_analysis():
    result = validate_crds(objects("canary"))
    assert result.returncode == 0, result.stderr
    for name in ("Rollout/visiontune", "AnalysisTemplate/visiontune-health"):
        assert f"checked {name}" in result.stdout
    docs = copy.deepcopy(objects("canary"))
    rollout = next(o for o in docs if o["kind"] == "Rollout")
    rollout["spec"]["strategy"]["canary"]["steps"][0]["setWeight"] = "a quarter"
    analysis = next(o for o in docs if o["kind"] == "AnalysisTemplate")
    del analysis["spec"]["metrics"][0]["name"]
    result = validate_crds(docs)
    assert result.returncode == 1
    assert "setWeight" in result.stderr and "name" in result.stderr


RETRAIN = ("k8s/retrain", "k8s/retrain/job")


@pytest.mark.parametrize("target", RETRAIN)
def test_retraining_manifests_validate_strict_and_pass_checkov(target, tmp_path):
    path = tmp_path / "retrain.yaml"
    path.write_text(render(target))
    kubernetes_validate(path)
    result = checkov_manifests(path, DEPLOY / "checkov.yaml")
    assert result.returncode == 0, result.stdout[-4000:]


def test_retraining_job_is_the_cronjobs_run():
    from visiontune.errors import EXIT_ERROR, EXIT_REFUSED

    cronjob = one("k8s/retrain", "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    spec = cronjob["spec"]["jobTemplate"]["spec"]
    assert one("k8s/retrain/job", "Job")["spec"] == spec
    (rule,) = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert sorted(rule["onExitCodes"]["values"]) == [EXIT_ERROR, EXIT_REFUSED]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_retraining_pod_keeps_the_store_and_reads_the_data():
    pod = one("k8s/retrain", "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][0] == "retrain"
    assert container["image"].startswith("registry.example.com/visiontune-train:")
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    claims = {
        volume["name"]: volume["persistentVolumeClaim"]["claimName"]
        for volume in pod["volumes"]
        if "persistentVolumeClaim" in volume
    }
    stored = {
        o["metadata"]["name"]
        for o in objects("k8s/retrain")
        if o["kind"] == "PersistentVolumeClaim"
    }
    assert set(claims.values()) == stored
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BENTOML_HOME"].startswith(mounts["store"]["mountPath"] + "/")
    assert mounts["data"]["readOnly"] is True
    data = container["args"][container["args"].index("--data") + 1]
    assert data.startswith(mounts["data"]["mountPath"] + "/")
    writable = {mount["mountPath"] for mount in mounts.values() if not mount.get("readOnly")}
    for name in ("XDG_CACHE_HOME", "MPLCONFIGDIR"):
        assert any(env[name].startswith(path + "/") for path in writable)


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


# What the formula can't read from the manifests (docs/serving.md, "Memory"): the runtime and
# weights of a ViT-base (on a GPU also the CUDA libraries), and the activations per image
# of a batch on the CPU (on a GPU they live in GPU memory).
MODEL_BYTES = {"gpu": 2 * GiB, "cpu": int(0.9 * GiB), "local": int(0.7 * GiB)}
BATCH_BYTES_PER_IMAGE = {"gpu": 0, "cpu": 10 * MiB, "local": 10 * MiB}
for canary in ("canary", "canary-mirror"):  # gpu's pods
    MODEL_BYTES[canary], BATCH_BYTES_PER_IMAGE[canary] = MODEL_BYTES["gpu"], 0


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


def test_trainer_dockerfile_passes_hadolint_and_checkov():
    dockerfile = DEPLOY / "k8s" / "retrain" / "Dockerfile"
    linted = run([tool("hadolint"), "--config", DEPLOY / "hadolint.yaml", dockerfile])
    assert linted.returncode == 0, linted.stdout + linted.stderr
    result = checkov_dockerfile(dockerfile)
    assert result.returncode == 0, result.stdout[-4000:]
    lines = dockerfile.read_text().splitlines()
    assert [line for line in lines if line.startswith("USER ")] == ["USER 1000:1000"]
    pod = one("k8s/retrain", "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 1000
