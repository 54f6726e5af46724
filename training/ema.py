"""An exponential moving average of the weights (``--ema-decay``), kept beside the model.

torch's ``AveragedModel`` keeps the copy and the count; the average here warms up
(decay ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, as in timm's
ModelEma), so a short fine-tuning run is not dominated by the starting weights.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def weight_average(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` (parameters and buffers), updated by ``.update_parameters(model)``."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], count) -> None:
        n = int(count)
        weight = 1.0 - min(decay, (1 + n) / (10 + n))
        for a, c in zip(averaged, current, strict=True):
            if a.is_floating_point():
                a.lerp_(c, weight)
            else:
                a.copy_(c)  # counters such as BatchNorm's num_batches_tracked

    averaged = AveragedModel(model, multi_avg_fn=update, use_buffers=True)
    averaged.requires_grad_(False)
    return averaged.eval()
