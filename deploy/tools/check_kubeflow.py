"""Check Kubeflow Training Operator objects (PyTorchJob) against the operator's API models.

No package on PyPI or npm ships the operator's CRD schema; its Python SDK
(``kubeflow-training``) ships the API models generated from the same Go types the
CRD is generated from, and the Kubernetes client's models for the pod templates
inside. Each object is rebuilt from those models field by field: a field a model
does not have, a value of the wrong type, or a required field left out (the
models' own client-side validation) fails it.

Input: a JSON array of Kubernetes objects on stdin; objects of other API groups
are ignored. Exit code 1 when any object fails or is of a kind without a model here.
"""

from __future__ import annotations

import json
import re
import sys

import kubernetes.client.models as kubernetes_models
from kubeflow.training import models as kubeflow_models

GROUP = "kubeflow.org/"
MODELS = {"PyTorchJob": "KubeflowOrgV1PyTorchJob"}
PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool}
# Kubernetes quantities (resources) are typed str by the client but may be plain numbers.
QUANTITY_MAPS = {"limits", "requests", "capacity", "allocatable"}


class Invalid(ValueError):
    pass


def build(value, kind: str, where: str):
    """``value`` (parsed JSON) as an instance of the model type named ``kind``."""
    if kind == "object":
        return value
    if match := re.fullmatch(r"list\[(.+)\]", kind):
        if not isinstance(value, list):
            raise Invalid(f"{where}: expected a list, got {type(value).__name__}")
        return [build(item, match[1], f"{where}[{i}]") for i, item in enumerate(value)]
    if match := re.fullmatch(r"dict\(str, (.+)\)", kind):
        if not isinstance(value, dict):
            raise Invalid(f"{where}: expected a map, got {type(value).__name__}")
        inner = match[1]
        if inner == "str" and where.rsplit(".", 1)[-1] in QUANTITY_MAPS:
            inner = "object"
        return {key: build(item, inner, f"{where}.{key}") for key, item in value.items()}
    if kind in PRIMITIVES:
        expected = PRIMITIVES[kind]
        if isinstance(value, bool) and kind != "bool" or not isinstance(value, expected):
            raise Invalid(f"{where}: expected {kind}, got {type(value).__name__} {value!r}")
        return value
    if kind == "datetime":
        return value
    return _model(value, kind, where)


def _model(value, kind: str, where: str):
    cls = getattr(kubeflow_models, kind, None) or getattr(kubernetes_models, kind, None)
    if cls is None:
        raise Invalid(f"{where}: no model {kind}")
    if not isinstance(value, dict):
        raise Invalid(f"{where}: expected an object ({kind}), got {type(value).__name__}")
    attributes = {json_name: name for name, json_name in cls.attribute_map.items()}
    unknown = sorted(set(value) - set(attributes))
    if unknown:
        raise Invalid(f"{where}: {kind} has no field {', '.join(unknown)}")
    arguments = {
        attributes[key]: build(item, cls.openapi_types[attributes[key]], f"{where}.{key}")
        for key, item in value.items()
    }
    try:
        return cls(**arguments)
    except ValueError as err:
        raise Invalid(f"{where}: {err}") from None


def check(document: dict) -> str | None:
    name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
    kind = MODELS.get(document.get("kind"))
    if kind is None:
        return f"{name}: no model known for this kind"
    try:
        build(document, kind, name)
    except Invalid as err:
        return str(err)
    return None


def main() -> int:
    documents = json.load(sys.stdin)
    ours = [d for d in documents if str(d.get("apiVersion", "")).startswith(GROUP)]
    failures = [failure for failure in map(check, ours) if failure]
    for document in ours:
        print(f"checked {document['kind']}/{document['metadata']['name']}")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
