"""Capture on Kubernetes (a volume or an object store, as kustomize components) and the
canary that mirrors live traffic to the new version first: rendered, validated, checked."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.support.deploy import (
    DEPLOY,
    KUBERNETES_VERSION,
    checkov_manifests,
    objects,
    one,
    render_with_components,
    run,
    tool,
    validate_crds,
)

COMPONENTS = ("capture-pvc", "capture-s3")
GiB = 2**30


def rendered(tmp_path, overlay: str, component: str) -> list[dict]:
    return render_with_components(tmp_path, overlay, [component])


def classifier(docs: list[dict]) -> dict:
    (deployment,) = [o for o in docs if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_capture_components_validate_and_pass_checkov(tmp_path, overlay, component):
    import yaml

    docs = rendered(tmp_path, overlay, component)
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    result = run([tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", path])
    assert result.returncode == 0, result.stdout + result.stderr
    checked = checkov_manifests(path, DEPLOY / "checkov.yaml")
    assert checked.returncode == 0, checked.stdout[-4000:]
    env = {e["name"]: e["value"] for e in classifier(docs)["env"] if "value" in e}
    assert Settings.from_env(env).capture == env["VISIONTUNE_CAPTURE"]
    assert classifier(docs)["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_volume_is_shared_by_every_pod_and_larger_than_the_budget(tmp_path):
    docs = rendered(tmp_path, "cpu", "capture-pvc")
    (claim,) = [o for o in docs if o["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    container = classifier(docs)
    env = {e["name"]: e["value"] for e in container["env"]}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "capture"]
    assert env["VISIONTUNE_CAPTURE"] == mount["mountPath"]
    pod = next(o for o in docs if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "capture"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    size = float(claim["spec"]["resources"]["requests"]["storage"].removesuffix("Gi")) * GiB
    assert float(env["VISIONTUNE_CAPTURE_MAX_GB"]) * 1e9 < size


def test_object_store_credentials_are_a_mounted_secret_file(tmp_path):
    docs = rendered(tmp_path, "gpu", "capture-s3")
    container = classifier(docs)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VISIONTUNE_CAPTURE"].startswith("s3://")
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "capture-s3"]
    assert mount["readOnly"] is True
    assert env["AWS_SHARED_CREDENTIALS_FILE"].startswith(mount["mountPath"] + "/")
    pod = next(o for o in docs if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "capture-s3"]
    assert volume["secret"]["secretName"] == "visiontune-capture-s3"
    policy = next(o for o in docs if o["kind"] == "NetworkPolicy")["spec"]
    ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert {53, 443} <= ports


def test_the_mirroring_canary_mirrors_before_it_shifts_traffic():
    rollout = one("canary-mirror", "Rollout")["spec"]["strategy"]["canary"]
    steps = rollout["steps"]
    mirrors = [i for i, step in enumerate(steps) if "setMirrorRoute" in step]
    weights = [i for i, step in enumerate(steps) if "setWeight" in step]
    started, stopped = mirrors
    assert "match" in steps[started]["setMirrorRoute"]  # on
    assert "match" not in steps[stopped]["setMirrorRoute"]  # off again
    assert started < stopped < weights[0]
    assert any("pause" in step for step in steps[started:stopped])
    routes = {route["name"] for route in rollout["trafficRouting"]["managedRoutes"]}
    assert {steps[i]["setMirrorRoute"]["name"] for i in mirrors} <= routes
    (match,) = steps[started]["setMirrorRoute"]["match"]
    assert match["path"]["prefix"] == "/classify"


def test_the_mirroring_canary_routes_through_its_services_and_virtual_service():
    docs = objects("canary-mirror")
    rollout = one("canary-mirror", "Rollout")["spec"]["strategy"]["canary"]
    service = {o["metadata"]["name"]: o for o in docs if o["kind"] == "Service"}
    labels = one("canary-mirror", "Deployment")["spec"]["template"]["metadata"]["labels"]
    for name in (rollout["canaryService"], rollout["stableService"]):
        assert service[name]["spec"]["selector"].items() <= labels.items()
    virtual = one("canary-mirror", "VirtualService")
    istio = rollout["trafficRouting"]["istio"]["virtualService"]
    assert istio["name"] == virtual["metadata"]["name"]
    (primary,) = [route for route in virtual["spec"]["http"] if route["name"] in istio["routes"]]
    hosts = [d["destination"]["host"] for d in primary["route"]]
    assert hosts == [rollout["stableService"], rollout["canaryService"]]
    assert virtual["spec"]["hosts"] == ["visiontune"] and "visiontune" in service
    namespace = one("canary-mirror", "Namespace")
    assert namespace["metadata"]["labels"]["istio-injection"] == "enabled"


def test_crd_validation_checks_the_mirror_route_and_the_virtual_service():
    import copy

    docs = objects("canary-mirror")
    result = validate_crds(docs)
    assert result.returncode == 0, result.stderr
    for name in ("Rollout/visiontune", "VirtualService/visiontune"):
        assert f"checked {name}" in result.stdout
    broken = copy.deepcopy(docs)
    rollout = next(o for o in broken if o["kind"] == "Rollout")
    mirror = next(
        s for s in rollout["spec"]["strategy"]["canary"]["steps"] if "setMirrorRoute" in s
    )
    mirror["setMirrorRoute"]["percentage"] = "all of it"
    virtual = next(o for o in broken if o["kind"] == "VirtualService")
    virtual["spec"]["http"][0]["route"][0]["weight"] = "most"
    result = validate_crds(broken)
    assert result.returncode == 1
    assert "percentage" in result.stderr and "weight" in result.stderr
