"""The server a user would write without visiontune: FastAPI + a transformers pipeline.

One image per request, classified on the event loop one at a time, exactly as
the usual tutorial has it. ``benchmarks.serve_throughput`` runs it with
``uvicorn benchmarks.baseline_app:app --workers 1`` on the same stored model
folder (``BASELINE_MODEL``) and sends it the same requests as the service
(``POST /classify``, multipart field ``images``).

Environment: ``BASELINE_MODEL`` (a Hugging Face model folder), ``BASELINE_DEVICE``
(``cpu`` or ``cuda``), ``BASELINE_DTYPE`` (``fp32``, ``bf16`` or ``fp16``).
"""

from __future__ import annotations

import io
import os

import torch
from fastapi import FastAPI, UploadFile
from PIL import Image
from transformers import pipeline

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

classifier = pipeline(
    "image-classification",
    model=os.environ["BASELINE_MODEL"],
    device=os.environ.get("BASELINE_DEVICE", "cpu"),
    dtype=DTYPES[os.environ.get("BASELINE_DTYPE", "fp32")],
)
app = FastAPI()


@app.post("/classify")
async def classify(images: UploadFile) -> list[dict]:
    image = Image.open(io.BytesIO(await images.read())).convert("RGB")
    top_k = classifier(image, top_k=5)
    return [{"label": top_k[0]["label"], "score": top_k[0]["score"], "top_k": top_k}]


@app.get("/readyz")
async def ready() -> dict:
    return {"ready": True}
