"""The stored model a scoring run uses, resolved once by the driver.

A tag or ``NAME@STAGE`` is resolved to ``NAME:VERSION`` before anything runs, so
every engine and every Ray worker scores with the same version, named in each row.
Ray workers load the model from its folder in the store (the same path on every
node: the store volume, or this machine for a local Ray).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from contract.images import Preprocessing
from contract.predictor import Predictor
from contract.savedmodel import ModelMetadata


@dataclass(frozen=True)
class StoredModel:
    tag: str
    path: str
    metadata: ModelMetadata
    preprocessing: Preprocessing

    @classmethod
    def resolve(cls, ref: str) -> StoredModel:
        import bentoml

        from contract.stages import resolve

        try:
            stored = bentoml.models.get(resolve(ref))
        except bentoml.exceptions.NotFound as err:
            from visiontune.errors import CommandError

            raise CommandError(f"{ref}: {err}") from None
        return cls(
            tag=str(stored.tag),
            path=stored.path,
            metadata=ModelMetadata.model_validate(stored.info.metadata),
            preprocessing=Preprocessing.from_pretrained(stored.path),
        )

    def predictor(self) -> Predictor:
        """The calibrated forward pass on the GPU when there is one (bf16 autocast where the
        GPU has it, else fp16, as the service does), else on the CPU in fp32."""
        if not torch.cuda.is_available():
            return Predictor.from_folder(self.path, self.metadata)
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return Predictor.from_folder(self.path, self.metadata, device="cuda", autocast_dtype=dtype)
