"""The calibrated forward pass: a stored model's pixels in, calibrated probabilities out.

One object for everyone who runs a stored model: the service, ``visiontune
evaluate``, the benchmarks and the end-to-end tests. It takes model-size uint8
images ``(B, H, W, 3)`` (what :meth:`Preprocessing.resize` makes), normalises
them as one tensor on the model's device, runs the model under ``inference_mode``
(and autocast when a lower precision is asked for), and divides the logits by the
temperature fitted at training before the softmax.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from contract.images import Preprocessing
from contract.portable import make_portable
from contract.savedmodel import ModelMetadata


class Predictor:
    """``softmax(model(normalise(pixels)) / temperature)`` for a model in Hugging Face format."""

    runtime = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        preprocessing: Preprocessing,
        temperature: float,
        *,
        device: torch.device | str = "cpu",
        autocast_dtype: torch.dtype | None = None,
    ):
        self.model = model
        self.preprocessing = preprocessing
        self.temperature = temperature
        self.device = torch.device(device)
        self.autocast_dtype = autocast_dtype
        self.quantized = False
        # most images per forward pass; a larger batch runs in chunks (None: all at once)
        self.forward_batch: int | None = None

    @classmethod
    def from_folder(
        cls,
        path: str | Path,
        metadata: ModelMetadata,
        *,
        device: torch.device | str = "cpu",
        autocast_dtype: torch.dtype | None = None,
    ) -> Predictor:
        """Load a stored model's folder with transformers alone, in eval mode on ``device``."""
        from transformers import AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(str(path))
        model = make_portable(model).eval().to(device)
        if model.config.num_labels != len(metadata.labels):
            raise RuntimeError(
                f"{path}: the model has {model.config.num_labels} outputs "
                f"but its metadata lists {len(metadata.labels)} labels"
            )
        return cls(
            model,
            Preprocessing.from_pretrained(path),
            metadata.temperature,
            device=device,
            autocast_dtype=autocast_dtype,
        )

    @property
    def precision(self) -> str:
        if self.quantized:
            return "int8"
        return str(self.autocast_dtype or torch.float32).removeprefix("torch.")

    def quantize_linear_layers(self) -> None:
        """int8 dynamic quantization of the linear layers, for CPUs: weights stored in int8,
        activations quantized batch by batch; everything else stays fp32."""
        if self.device.type != "cpu":
            raise ValueError("int8 dynamic quantization runs on CPU only")
        self.model = torch.ao.quantization.quantize_dynamic(
            self.model, {torch.nn.Linear}, dtype=torch.qint8
        )
        self.quantized = True

    @torch.inference_mode()
    def logits(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 to uncalibrated float32 logits (B, labels), on the CPU, in
        forward passes of at most ``forward_batch`` images."""
        batch = torch.as_tensor(pixels)
        step = self.forward_batch
        if step and len(batch) > step:
            return torch.cat(
                [self._forward(batch[i : i + step]) for i in range(0, len(batch), step)]
            )
        return self._forward(batch)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda" and batch.device.type == "cpu":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        else:
            batch = batch.to(self.device)
        return self.run(self.preprocessing.normalize(batch))

    def run(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised ``pixel_values`` (B, 3, H, W) to float32 logits on the CPU: the forward
        pass itself, which the runtimes of ``contract.runtimes`` replace."""
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            logits = self.model(pixel_values=pixel_values).logits
        return logits.float().cpu()

    @torch.inference_mode()
    def classify_pixel_values(self, pixel_values: np.ndarray) -> np.ndarray:
        """Already normalised float32 (B, 3, H, W) to calibrated probabilities, in forward
        passes of at most ``forward_batch`` images (for callers that preprocess themselves)."""
        batch = torch.as_tensor(pixel_values, dtype=torch.float32)
        step = self.forward_batch or len(batch) or 1
        logits = torch.cat(
            [self.run(batch[i : i + step].to(self.device)) for i in range(0, len(batch), step)]
        )
        return torch.softmax(logits / self.temperature, dim=-1).numpy()

    def __call__(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, H, W, 3) uint8 to calibrated probabilities (B, labels)."""
        return torch.softmax(self.logits(pixels) / self.temperature, dim=-1).numpy()

    def classify(self, images: list[Image.Image]) -> np.ndarray:
        """RGB images of any size to calibrated probabilities (resized as at serving)."""
        return self(np.stack([self.preprocessing.resize(image) for image in images]))
