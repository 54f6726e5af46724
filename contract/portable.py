"""Layers of transformers models swapped for equivalents every runtime accepts.

A stored model stays a plain transformers folder (``from_pretrained`` rebuilds it
with no visiontune code); on loading, a few layers that give the same numbers but
that some runtimes refuse are replaced here, before the model is run or exported.

- EfficientNet pools its last feature map with ``AvgPool2d(kernel_size=hidden_dim,
  ceil_mode=True)``: a window larger than any feature map, clipped to it, which is
  a global mean. OpenVINO refuses that graph; ``AdaptiveAvgPool2d(1)`` (ONNX's
  ``GlobalAveragePool``) computes the same mean.
"""

from __future__ import annotations

from torch import nn


def make_portable(model: nn.Module) -> nn.Module:
    """``model`` with its runtime-unfriendly layers replaced by equivalents (in place)."""
    base = getattr(model, "base_model", model)
    pooler = getattr(base, "pooler", None)
    if model.config.model_type == "efficientnet" and isinstance(pooler, nn.AvgPool2d):
        base.pooler = nn.AdaptiveAvgPool2d(1)
    return model
