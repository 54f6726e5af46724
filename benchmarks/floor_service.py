"""BentoML's floor: the least a BentoML service does to answer the serving benchmark's request.

``bentoml serve benchmarks.floor_service:BentoMLFloor`` serves the model that
``VISIONTUNE_MODEL`` names with nothing of the service around it: one batchable API
that reads the multipart form, decodes and resizes each file with ``contract.images``
and runs the same ``Predictor`` in the same precision (``VISIONTUNE_PRECISION``
fp32 or bf16) and passes (``service.forward_batch``'s choice at start-up),
answering a label and a score per image. CPU only. No input checks, no
decode thread, no middlewares, no metrics but the two timings the benchmark reads
(``visiontune_preprocess_seconds``, ``visiontune_inference_seconds``). BentoML's own
request path is as in the service: uvicorn, BentoML's metrics middleware, its
batching dispatcher (with ``service.batching``'s scheduling, as in the service: stock
BentoML holds each lone request for about as long as a batch took under the last
burst) and a worker thread for the batch, the access log and tracing off.

What this row spends per image outside decoding and the forward pass is BentoML's
own, which no service built on it goes below; what the service spends beyond it is
the service's (``benchmarks.serve_throughput`` reports both side by side).
"""

from __future__ import annotations

import gc
import os
import time
from typing import Annotated, Any

import bentoml
import numpy as np
import torch
from bentoml.validators import ContentType
from pydantic import BaseModel

from contract.images import decode_image
from contract.predictor import Predictor
from contract.savedmodel import ModelMetadata
from service import batching
from service.forward_batch import choose_forward_batch

MAX_BATCH_SIZE = 32
batching.install()  # before BentoML builds the dispatcher


class Files(bentoml.IODescriptor):
    """The image files of the form field ``images``, as bytes."""

    images: list[Any]
    media_type = "multipart/form-data"

    @classmethod
    async def from_http_request(cls, request, serde) -> Files:
        form = await request.form()
        files = [await part.read() for part in form.getlist("images")]
        await form.close()
        return cls.model_construct(images=files)


class Answer(BaseModel):
    label: str
    score: float


Answers = Annotated[list[Answer], ContentType("application/json")]


@bentoml.service(
    workers=1,
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ".*"},
    traffic={"max_concurrency": 64},
)
class BentoMLFloor:
    stored = bentoml.models.BentoModel(os.environ.get("VISIONTUNE_MODEL", "none:none"))

    def __init__(self) -> None:
        from prometheus_client import Histogram

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        metadata = ModelMetadata.model_validate(self.stored.info.metadata)
        self.labels = metadata.labels
        dtype = torch.bfloat16 if os.environ.get("VISIONTUNE_PRECISION") == "bf16" else None
        self.predictor = Predictor.from_folder(
            self.stored.path, metadata, device=torch.device("cpu"), autocast_dtype=dtype
        )
        chosen = choose_forward_batch(self.predictor, "auto", MAX_BATCH_SIZE)
        self.predictor.forward_batch = chosen.size
        self.decode_seconds = Histogram("visiontune_preprocess_seconds", "Decoding a batch.")
        self.inference_seconds = Histogram("visiontune_inference_seconds", "A batch's forward.")
        size = (self.predictor.preprocessing.height, self.predictor.preprocessing.width)
        self.predictor(np.zeros((MAX_BATCH_SIZE, *size, 3), dtype=np.uint8))
        gc.collect()
        gc.freeze()

    @bentoml.api(
        input_spec=Files, batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=10000
    )
    def classify(self, images: list[Any]) -> Answers:
        started = time.perf_counter()
        preprocessing = self.predictor.preprocessing
        draft = preprocessing.draft_size
        pixels = np.stack(
            [preprocessing.resize(decode_image(file, draft_size=draft)) for file in images]
        )
        decoded = time.perf_counter()
        probabilities = self.predictor(pixels)
        self.decode_seconds.observe(decoded - started)
        self.inference_seconds.observe(time.perf_counter() - decoded)
        return [Answer(label=self.labels[p.argmax()], score=float(p.max())) for p in probabilities]
