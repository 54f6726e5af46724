"""Offline checks of the manifests past one machine: the multi-node fine-tuning PyTorchJob
(deploy/k8s/multinode) and the batch-scoring RayJob (deploy/k8s/score).

Every pod template inside them is validated strictly as a Kubernetes ``PodTemplate``;
the PyTorchJob is rebuilt from the Training Operator's API models
(deploy/tools/check_kubeflow.py); both pass checkov. KubeRay's CRD schema ships in no
PyPI or npm package, so the RayJob's own fields are checked by the assertions here.
"""

from __future__ import annotations

import copy
import json

import yaml

from tests.support.deploy import (
    DEPLOY,
    KUBERNETES_VERSION,
    objects,
    one,
    render,
    run,
    tool,
)

MULTINODE, SCORE, RETRAIN = "k8s/multinode", "k8s/score", "k8s/retrain"


def pod_templates(document: dict) -> dict[str, dict]:
    """The pod templates of a PyTorchJob or a RayJob, by where they sit."""
    spec = document["spec"]
    if document["kind"] == "PyTorchJob":
        return {role: replica["template"] for role, replica in spec["pytorchReplicaSpecs"].items()}
    cluster = spec["rayClusterSpec"]
    templates = {"head": cluster["headGroupSpec"]["template"]}
    for group in cluster["workerGroupSpecs"]:
        templates[f"worker {group['groupName']}"] = group["template"]
    templates["submitter"] = spec["submitterPodTemplate"]
    return templates


def validate_pod_templates(document: dict, tmp_path) -> tuple[int, str]:
    """kubernetes-validate --strict on each pod template wrapped as a v1 PodTemplate."""
    wrapped = [
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": where.replace(" ", "-")},
            "template": template,
        }
        for where, template in pod_templates(document).items()
    ]
    path = tmp_path / "pods.yaml"
    path.write_text(yaml.safe_dump_all(wrapped))
    result = run([tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", path])
    return result.returncode, result.stdout + result.stderr


def check_kubeflow(documents: list[dict]):
    return run(
        [tool("python"), DEPLOY / "tools" / "check_kubeflow.py"], input=json.dumps(documents)
    )


def checkov(target: str, tmp_path):
    path = tmp_path / "rendered.yaml"
    path.write_text(render(target))
    return run(
        [
            tool("checkov"),
            "--file", path,
            "--framework", "kubernetes",
            "--config-file", DEPLOY / "checkov.yaml",
            "--compact", "--quiet", "--skip-download",
        ]
    )  # fmt: skip


def test_pod_templates_validate_strict(tmp_path):
    for target, kind in ((MULTINODE, "PyTorchJob"), (SCORE, "RayJob")):
        code, output = validate_pod_templates(one(target, kind), tmp_path)
        assert code == 0, output


def test_strict_pod_validation_catches_a_typo(tmp_path):
    job = copy.deepcopy(one(SCORE, "RayJob"))
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["volumeMount"] = head["containers"][0].pop("volumeMounts")
    code, output = validate_pod_templates(job, tmp_path)
    assert code != 0 and "volumeMount" in output


def test_pytorchjob_matches_the_training_operators_models():
    result = check_kubeflow(objects(MULTINODE))
    assert result.returncode == 0, result.stderr
    assert "checked PyTorchJob/visiontune-train-multinode" in result.stdout


def test_the_operators_models_reject_a_bad_pytorchjob():
    job = copy.deepcopy(one(MULTINODE, "PyTorchJob"))
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["replica"] = 3
    assert "V1ReplicaSpec has no field replica" in check_kubeflow([job]).stderr
    job = copy.deepcopy(one(MULTINODE, "PyTorchJob"))
    job["spec"]["runPolicy"]["backoffLimit"] = "six"
    assert "backoffLimit: expected int" in check_kubeflow([job]).stderr
    job = copy.deepcopy(one(MULTINODE, "PyTorchJob"))
    del job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["name"]
    assert "`name`, must not be `None`" in check_kubeflow([job]).stderr


def test_checkov_passes(tmp_path):
    for target in (MULTINODE, SCORE):
        result = checkov(target, tmp_path)
        assert result.returncode == 0, result.stdout[-4000:]


def gpu_overlay_container() -> dict:
    (container,) = one("k8s/overlays/gpu", "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def retrain_claims() -> set[str]:
    return {o["metadata"]["name"] for o in objects(RETRAIN) if o["kind"] == "PersistentVolumeClaim"}


def claims(pod: dict) -> set[str]:
    return {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }


def test_every_training_pod_runs_torchrun_on_a_gpu_with_the_retraining_volumes():
    job = one(MULTINODE, "PyTorchJob")
    gpu_pod = one("k8s/overlays/gpu", "Deployment")["spec"]["template"]["spec"]
    gpus = gpu_overlay_container()["resources"]["limits"]["nvidia.com/gpu"]
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    assert job["spec"]["nprocPerNode"] == str(gpus)  # one process per GPU of a pod
    for role, template in pod_templates(job).items():
        pod = template["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch", role  # the container the operator wires
        assert container["command"] == ["torchrun"]
        assert container["args"][:3] == ["--module", "visiontune", "train"]
        assert "--resume-if-present" in container["args"]  # a restarted pod continues
        assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus
        assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
        assert pod["nodeSelector"] == gpu_pod["nodeSelector"]
        assert pod["tolerations"] == gpu_pod["tolerations"]
        assert claims(pod) == retrain_claims()
        env = {e["name"]: e["value"] for e in container["env"]}
        store = next(m for m in container["volumeMounts"] if m["name"] == "store")
        assert env["BENTOML_HOME"].startswith(store["mountPath"] + "/")
        output = container["args"][container["args"].index("--output-dir") + 1]
        assert output.startswith(store["mountPath"] + "/")  # checkpoints survive the pod
    assert replicas["Master"]["restartPolicy"] == replicas["Worker"]["restartPolicy"] == "OnFailure"


def test_rayjob_scores_with_the_ray_engine_on_gpu_workers_reading_the_store():
    job = one(SCORE, "RayJob")["spec"]
    words = job["entrypoint"].split()
    assert words[:2] == ["visiontune", "score"]
    assert words[words.index("--engine") + 1] == "ray"
    assert job["shutdownAfterJobFinishes"] is True
    cluster = job["rayClusterSpec"]
    import ray

    assert cluster["rayVersion"] == ray.__version__  # the Ray the project installs
    templates = pod_templates(one(SCORE, "RayJob"))
    gpus = gpu_overlay_container()["resources"]["limits"]["nvidia.com/gpu"]
    (worker,) = cluster["workerGroupSpecs"]
    (container,) = worker["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    mounts = {}
    for where in ("head", "worker gpu"):
        pod = templates[where]["spec"]
        assert claims(pod) == retrain_claims(), where
        (container,) = pod["containers"]
        mounts[where] = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["BENTOML_HOME"].startswith("/store/")
    assert mounts["head"] == mounts["worker gpu"]  # the model folder at one path everywhere
    output = words[words.index("--output") + 1]
    assert any(
        output.startswith(path + "/") for path, name in mounts["head"].items() if name == "store"
    )
