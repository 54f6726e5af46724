"""Serving knobs, read from ``VISIONTUNE_*`` environment variables and validated once.

They are read when the service module is imported, because BentoML takes the
batching parameters and the worker count from the decorators. A bad value stops
``bentoml serve`` at start-up with the variable's name in the message.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.images import DEFAULT_MAX_PIXELS
from contract.savedmodel import DEFAULT_MODEL_TAG

PREFIX = "VISIONTUNE_"
# Peak bytes per pixel while one image decodes: the decoded image and its RGB conversion.
DECODE_BYTES_PER_PIXEL = 8


class Settings(BaseModel):
    """Each field is set by ``VISIONTUNE_<FIELD NAME IN CAPITALS>``."""

    model_config = ConfigDict(
        frozen=True, alias_generator=lambda name: PREFIX + name.upper(), populate_by_name=True
    )

    model: str = Field(DEFAULT_MODEL_TAG, description="Tag of the stored model to serve.")
    max_batch_size: int = Field(
        32, ge=1, description="Most images in one forward pass; 1 turns adaptive batching off."
    )
    max_latency_ms: int = Field(
        10_000,
        ge=1,
        description="Longest a queued image may wait for its batch; past it BentoML answers 503.",
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
    max_body_mb: float = Field(32, gt=0, description="Largest request body in MiB.")
    top_k: int = Field(
        5, ge=1, description="Labels per image in the answer unless the request says."
    )
    low_confidence: float = Field(
        0.5, ge=0, le=1, description="Calibrated scores below this count as low confidence."
    )
    drift_window: int = Field(
        1000, ge=1, description="Recent predictions per worker compared with the training labels."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Inference precision. auto: bf16 on a GPU that has it (else fp16), fp32 on "
        "CPU. bf16 also runs on CPU, fast where it has AVX512-BF16 or AMX (BENCHMARKS.md).",
    )
    compile: bool = Field(
        False, description="torch.compile the model (slower start, faster steps)."
    )
    threads: int | None = Field(
        None, ge=1, description="Torch CPU threads per worker; default: the CPUs shared by workers."
    )
    max_concurrency: int = Field(
        64,
        ge=1,
        description="Most requests in flight per server, shared by its workers; more are "
        "answered 503 with Retry-After at once (README, Memory).",
    )
    decode_threads: int | None = Field(
        None,
        ge=1,
        description="Requests decoded at once per worker; default: the CPUs shared by workers.",
    )
    timeout_s: float = Field(
        60, gt=0, description="Longest a request may take; past it BentoML answers 504."
    )

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
        """The most memory the server can use, in bytes (README, "Memory"): per worker, the
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

    def autocast_dtype(self, device: str, gpu_has_bf16: bool = False) -> str | None:
        """The ``torch.autocast`` dtype ``precision`` means on ``device`` ("cpu" or "cuda");
        None is fp32 (no autocast)."""
        if self.precision == "auto":
            if device != "cuda":
                return None
            return "bfloat16" if gpu_has_bf16 else "float16"
        return {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}[self.precision]

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


settings = Settings.from_env()
