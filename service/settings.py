"""Serving knobs, read from ``VISIONTUNE_*`` environment variables and validated once.

They are read when the service module is imported (the first use of
``settings``), because BentoML takes the batching parameters and the worker count
from the decorators. A bad value stops ``bentoml serve`` at start-up with the
variable's name in the message. The defaults are the fields' own: the client
(``visiontune.client``) reads them from ``Settings`` without reading the
environment.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from contract.images import DEFAULT_MAX_PIXELS
from contract.savedmodel import DEFAULT_MODEL_TAG

PREFIX = "VISIONTUNE_"
SHADOW_ENV = PREFIX + "SHADOW"
# Peak bytes per pixel while one image decodes: the decoded image and its RGB conversion.
DECODE_BYTES_PER_PIXEL = 8
# Share of images a shadow model answers on a CPU by default (VISIONTUNE_SHADOW_RATE=auto).
DEFAULT_CPU_SHADOW_RATE = 0.1
# A served model's name: it is part of a URL path and a metric label.
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# Headers never written to a capture, whatever VISIONTUNE_CAPTURE_HEADERS says.
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class Settings(BaseModel):
    """Each field is set by ``VISIONTUNE_<FIELD NAME IN CAPITALS>``."""

    model_config = ConfigDict(
        frozen=True, alias_generator=lambda name: PREFIX + name.upper(), populate_by_name=True
    )

    model: str = Field(
        DEFAULT_MODEL_TAG,
        description="Stored model to serve: NAME:VERSION, NAME:latest or NAME@STAGE "
        "(resolved once at start).",
    )
    max_batch_size: int = Field(
        32, ge=1, description="Most images in one forward pass; 1 turns adaptive batching off."
    )
    max_latency_ms: int = Field(
        10_000,
        ge=1,
        description="Longest a queued image may wait for its batch; past it BentoML answers 503.",
    )
    forward_batch: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="Most images in one forward pass; a larger batch runs in chunks of this "
        "size. auto: on a CPU, the size fastest per image at warm-up (service.forward_batch); "
        "on a GPU, the whole batch.",
    )
    workers: int = Field(
        1, ge=1, description="Worker processes, each with its own copy of the model."
    )
    max_images: int = Field(64, ge=1, description="Most images in one request.")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        description="Largest width x height accepted, checked before decoding.",
    )
    max_request_pixels: int = Field(
        100_000_000,
        ge=1,
        description="Most pixels (width x height, summed over its images) one request may ask "
        "to decode, checked on the headers before decoding.",
    )
    max_body_mb: float = Field(32, gt=0, description="Largest request body in MiB.")
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token the inference endpoints and /model require; unset: no auth.",
    )
    api_token_file: Path | None = Field(
        None,
        description="File holding the bearer token (a mounted Kubernetes Secret); a file that "
        "does not exist leaves auth off, with a warning in the log.",
    )
    top_k: int = Field(
        5, ge=1, description="Labels per image in the answer unless the request says."
    )
    low_confidence: float = Field(
        0.5, ge=0, le=1, description="Calibrated scores below this count as low confidence."
    )
    drift_window: int = Field(
        1000, ge=1, description="Recent predictions per worker compared with the training labels."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = Field(
        "auto",
        description="Inference precision. auto: bf16 on a GPU that has it (else fp16); on a CPU "
        "with native bf16 (AVX512-BF16 or AMX) bf16 if it passes the warm-up check against "
        "fp32 (contract.precision), else fp32. int8: dynamic quantization of the linear "
        "layers, CPU only.",
    )
    runtime: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto",
        description="What runs the forward pass (service.runtime). onnxruntime and openvino run "
        "the ONNX graph `visiontune optimize` keeps in the stored model, if it agrees with torch "
        "fp32 on the model's stored held-out images at warm-up (else torch serves, and the log "
        "says why). auto: on a CPU, the fastest of those that agree, timed at warm-up; on a "
        "GPU, torch.",
    )
    onnx_provider: Literal["cpu", "cuda", "tensorrt"] = Field(
        "cpu",
        description="ONNX Runtime's execution provider with VISIONTUNE_RUNTIME=onnxruntime; "
        "cuda and tensorrt need onnxruntime-gpu and an NVIDIA GPU.",
    )
    compile: bool = Field(
        False, description="torch.compile the model (slower start, faster steps)."
    )
    access_log: bool = Field(
        False, description="BentoML's access log: one line per request, at a CPU cost per request."
    )
    tracing: bool = Field(
        False,
        description="OpenTelemetry spans for every request; the exporter is set in BentoML's "
        "configuration (tracing.exporter_type). Off: no span work per request.",
    )
    gpu_decode: bool = Field(
        False,
        description="Decode the JPEGs of a batch on the GPU (nvJPEG through torchvision); other "
        "formats decode on the CPU. Needs CUDA and torchvision.",
    )
    threads: int | None = Field(
        None, ge=1, description="Torch CPU threads per worker; default: the CPUs shared by workers."
    )
    max_concurrency: int = Field(
        64,
        ge=1,
        description="Most requests in flight per server, shared by its workers; more are "
        "answered 503 with Retry-After at once (docs/serving.md, 'Memory').",
    )
    decode_threads: int | None = Field(
        None,
        ge=1,
        description="Requests decoded at once per worker; default: the CPUs shared by workers.",
    )
    timeout_s: float = Field(
        60, gt=0, description="Longest a request may take; past it BentoML answers 504."
    )
    models: dict[str, str] | None = Field(
        None,
        description="Several stored models in one server: NAME=REF,NAME=REF (REF as for "
        "VISIONTUNE_MODEL); a request picks one by name, the first is the default. Unset: "
        "VISIONTUNE_MODEL alone.",
    )
    capture: str | None = Field(
        None,
        description="Keep a share of the traffic (images as received, answers) in this folder "
        "or fsspec URL (s3://bucket/prefix); unset: no capture (docs/capture.md).",
    )
    capture_rate: float = Field(
        0.05, ge=0, le=1, description="Share of requests whose images and answers are captured."
    )
    capture_low_confidence: bool = Field(
        True,
        description="Also capture every answer scored below VISIONTUNE_LOW_CONFIDENCE.",
    )
    capture_max_gb: float = Field(
        10, gt=0, description="Most the capture may hold (GB); when full, capture stops."
    )
    capture_headers: list[str] = Field(
        ["user-agent", "x-request-id"],
        description="Request headers recorded with each capture (comma-separated names).",
    )
    capture_queue: int = Field(
        1024,
        ge=2,
        description="Captures waiting to be written per worker; past it they are dropped "
        "(counted), so a slow store never slows an answer.",
    )
    shadow: str | None = Field(
        None,
        description="A second stored model (NAME@candidate or a tag) that answers the same "
        "images after the answers are sent, unseen: metrics and captures compare it.",
    )
    shadow_rate: Annotated[float, Field(ge=0, le=1)] | Literal["auto"] = Field(
        "auto",
        description="Share of images the shadow answers. auto: all on a GPU, "
        f"{DEFAULT_CPU_SHADOW_RATE} on a CPU (where it shares the cores with the model "
        "serving; BENCHMARKS.md gives its cost).",
    )

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.max_request_pixels < self.max_pixels:
            raise ValueError(
                f"{PREFIX}MAX_REQUEST_PIXELS ({self.max_request_pixels}) is below "
                f"{PREFIX}MAX_PIXELS ({self.max_pixels}): one image could never pass; "
                "raise the first or lower the second"
            )
        if self.api_token is not None and self.api_token_file is not None:
            raise ValueError(f"{PREFIX}API_TOKEN and {PREFIX}API_TOKEN_FILE are both set: keep one")
        if self.api_token is not None and not self.api_token.get_secret_value().strip():
            raise ValueError(f"{PREFIX}API_TOKEN is empty: unset it to turn auth off")
        if self.models and "model" in self.model_fields_set:
            raise ValueError(
                f"{PREFIX}MODEL and {PREFIX}MODELS are both set: name every model in "
                f"{PREFIX}MODELS (the first is the default)"
            )
        return self

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> Any:
        """``a=NAME@production,b=OTHER:VERSION`` to ``{"a": ..., "b": ...}``, in order."""
        if not isinstance(value, str):
            return value
        models: dict[str, str] = {}
        for item in (part.strip() for part in value.split(",") if part.strip()):
            name, equals, ref = (text.strip() for text in item.partition("="))
            if not equals or not name or not ref:
                raise ValueError(
                    f"{item!r} is not NAME=REF, e.g. digits=visiontune-classifier@production"
                )
            if not MODEL_NAME.match(name):
                raise ValueError(
                    f"model name {name!r}: use lower-case letters, digits, '-', '_' or '.' "
                    "(it is part of the URL /models/NAME/... and of metric labels)"
                )
            if name in models:
                raise ValueError(f"model name {name!r} is given twice")
            models[name] = ref
        if not models:
            raise ValueError("names no model: NAME=REF,NAME=REF")
        return models

    @field_validator("capture_headers", mode="before")
    @classmethod
    def _parse_headers(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [name.strip() for name in value.split(",") if name.strip()]
        names = [name.lower() for name in value]
        secret = sorted(set(names) & SECRET_HEADERS)
        if secret:
            raise ValueError(f"{', '.join(secret)} carries credentials and is never captured")
        return names

    @field_validator("capture", "shadow", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def served_models(self) -> dict[str, str]:
        """Name to model reference of every model served; the first is the default. With
        ``VISIONTUNE_MODEL`` alone, one model named after the reference's model name."""
        if self.models:
            return dict(self.models)
        return {self.model.split("@")[0].split(":")[0]: self.model}

    def shadow_share(self, has_gpu: bool) -> float:
        """The share of images the shadow answers (``shadow_rate``; auto: by device)."""
        if self.shadow_rate != "auto":
            return float(self.shadow_rate)
        return 1.0 if has_gpu else DEFAULT_CPU_SHADOW_RATE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``VISIONTUNE_*`` variables; errors name the variable."""
        environ = os.environ if environ is None else environ
        return cls.model_validate({k: v for k, v in environ.items() if k.startswith(PREFIX)})

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def batching(self) -> dict[str, Any]:
        """Keyword arguments of the model's ``@bentoml.api``: batching is off at size 1."""
        if self.max_batch_size == 1:
            return {"batchable": False}
        return {
            "batchable": True,
            "max_batch_size": self.max_batch_size,
            "max_latency_ms": self.max_latency_ms,
        }

    @property
    def traffic(self) -> dict[str, Any]:
        """The ``traffic`` section of the ``@bentoml.service`` config."""
        return {"max_concurrency": self.max_concurrency, "timeout": self.timeout_s}

    def decode_slots(self, cpus: int | None = None) -> int:
        """Concurrent decodes per worker: ``decode_threads`` if set, else the worker's share of
        ``cpus`` (default: this machine's); more would only share cores and hold more images."""
        return self.decode_threads or max(1, (cpus or available_cpus()) // self.workers)

    def memory_ceiling(self, model_bytes: int, batch_bytes_per_image: int, cpus: int) -> int:
        """The most memory the server can use, in bytes (docs/serving.md, "Memory"): per worker, the
        model and runtime, a full batch, every decode slot holding the largest image, and
        every request in flight holding a body of the largest size twice (read, then decoded)."""
        requests = math.ceil(self.max_concurrency / self.workers)
        per_worker = (
            model_bytes
            + self.max_batch_size * batch_bytes_per_image
            + self.decode_slots(cpus) * self.max_pixels * DECODE_BYTES_PER_PIXEL
            + requests * 2 * self.max_body_bytes
        )
        return self.workers * per_worker

    def check_precision(self, has_gpu: bool) -> None:
        """Refuse a precision this machine can't run (at import, before workers start)."""
        if self.precision == "fp16" and not has_gpu:
            raise ValueError(f"{PREFIX}PRECISION=fp16 needs a GPU; on CPU use bf16 or fp32")
        if self.precision == "int8" and has_gpu:
            raise ValueError(
                f"{PREFIX}PRECISION=int8 quantizes for CPUs only; on a GPU use auto, bf16 or fp16"
            )

    def check_gpu_decode(self, has_gpu: bool, has_torchvision: bool) -> None:
        """Refuse GPU decoding on a machine that can't do it (at import, like the precision)."""
        if self.gpu_decode and not (has_gpu and has_torchvision):
            missing = "a CUDA GPU" if not has_gpu else "torchvision (the GPU image has it)"
            raise ValueError(f"{PREFIX}GPU_DECODE=1 needs {missing}; unset it to decode on CPU")

    def check_runtime(self, has_gpu: bool, providers: list[str] | None) -> None:
        """Refuse a runtime setting this machine can't run (at import, like the precision).

        ``providers``: ONNX Runtime's available execution providers (None: not installed).
        """
        if self.onnx_provider != "cpu":
            if self.runtime != "onnxruntime":
                raise ValueError(
                    f"{PREFIX}ONNX_PROVIDER={self.onnx_provider} applies to ONNX Runtime: "
                    f"set {PREFIX}RUNTIME=onnxruntime, or unset {PREFIX}ONNX_PROVIDER"
                )
            wanted = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
            if not has_gpu or wanted[self.onnx_provider] not in (providers or []):
                missing = "an NVIDIA GPU" if not has_gpu else "onnxruntime-gpu"
                raise ValueError(
                    f"{PREFIX}ONNX_PROVIDER={self.onnx_provider} needs {missing} with ONNX "
                    f"Runtime's {wanted[self.onnx_provider]} (available here: "
                    f"{', '.join(providers or ['no onnxruntime'])}); unset it to run on the CPU"
                )
        if self.runtime == "openvino" and self.precision == "fp16":
            raise ValueError(f"{PREFIX}RUNTIME=openvino runs fp32, bf16 or int8 on a CPU")
        cpu_onnxruntime = self.runtime == "onnxruntime" and self.onnx_provider == "cpu"
        if cpu_onnxruntime and self.precision in ("bf16", "fp16"):
            raise ValueError(
                f"{PREFIX}RUNTIME=onnxruntime runs fp32 or int8 on a CPU; for "
                f"{PREFIX}PRECISION={self.precision} use openvino (bf16) or torch"
            )

    @property
    def bentoml_config(self) -> dict[str, Any]:
        """Service configuration for ``@bentoml.service``: the access log and tracing as set,
        and the traffic limits.

        With tracing off every path is excluded from BentoML's OpenTelemetry middleware,
        which otherwise opens a span per request even when no exporter is configured. A
        BentoML configuration file (``BENTOML_CONFIG``) still overrides both.
        """
        config: dict[str, Any] = {
            "logging": {"access": {"enabled": self.access_log}},
            "traffic": self.traffic,
        }
        if not self.tracing:
            config["tracing"] = {"excluded_urls": ".*"}
        return config

    def autocast_dtype(self, device: str, gpu_has_bf16: bool = False) -> str | None:
        """The ``torch.autocast`` dtype ``precision`` means on ``device`` ("cpu" or "cuda");
        None is fp32 (no autocast); so is int8, whose quantized layers need none. On CPU,
        auto's bf16 is decided at warm-up (contract.precision)."""
        if self.precision == "auto":
            if device != "cuda":
                return None
            return "bfloat16" if gpu_has_bf16 else "float16"
        return {"fp32": None, "bf16": "bfloat16", "fp16": "float16", "int8": None}[self.precision]

    def cpu_threads(self) -> int:
        """Torch threads per worker: ``threads`` if set, else the CPUs this container may use
        shared by the workers (too many threads on a busy host wait on each other)."""
        return self.threads or max(1, available_cpus() // self.workers)


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may run on, honouring a cgroup v2 quota (a Kubernetes CPU limit)."""
    count = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup.read_text().split()
    except (OSError, ValueError):
        return count
    if quota == "max":
        return count
    return max(1, min(count, math.ceil(int(quota) / int(period))))


def __getattr__(name: str) -> Settings:
    """``settings``: the server's, read from the environment once, on first use."""
    if name != "settings":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()["settings"] = Settings.from_env()
    return globals()["settings"]
