"""Batched data augmentation on the training device, after the decoded-image cache.

``ImageSet`` decodes and resizes every image once; each training batch of
``(B, H, W, 3)`` uint8 pixels is then augmented as one tensor on the device the
model trains on (kornia: pure PyTorch, so it runs on the GPU when there is one),
mixed (mixup/cutmix) if asked, and normalised for the model. Validation and test
batches are never augmented.

Every random draw is seeded from (seed, epoch, batch, process), never from the
global generator's history, so a run resumed mid-epoch replays the same
augmented pixels as an unbroken one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from kornia.augmentation.auto import RandAugment, TrivialAugment
from PIL import Image
from torch import nn

from contract.images import Preprocessing

log = logging.getLogger(__name__)

POLICIES = ("none", "light", "strong", "randaugment", "trivialaugment")
SIZE_SAMPLE = 256  # training images whose size is read for the "smaller than the input" warning


def build_policy(policy: str, height: int, width: int, flip: bool) -> nn.Module | None:
    """The kornia pipeline of a named policy on ``(B, 3, H, W)`` floats in [0, 1]; None for 'none'.

    light: a random resized crop, rotation, shift and shear in one affine warp
    (zoom 0.9-1.2x per axis: a crop of about 70-100% of the area with its aspect
    changed up to about 4:3, or a slight zoom out; up to 10 degrees, 12.5% shift,
    8 degrees shear), resampled bilinearly or, for 30% of the batches, by the
    nearest pixel; then brightness and contrast jitter of up to 20%; a Gaussian
    blur for 20% of the images; Gaussian noise for 30% (:class:`PixelNoise`).
    strong: kornia's random resized crop of 50-100% of the area, then wider
    ranges (20 degrees, 15% shift, 15 degrees shear), saturation jitter, blur
    and random erasing.
    randaugment / trivialaugment: the light warp, then RandAugment (2 operations
    at magnitude 9 of 30) or TrivialAugment (one operation, random magnitude),
    whose operations include colour inversion, solarising and posterising.
    """
    if policy == "none":
        return None
    light_warp = _light_warp()
    steps: list[nn.Module]
    if policy == "light":
        steps = [
            light_warp,
            K.ColorJitter(brightness=0.2, contrast=0.2, p=0.8),
            GaussianBlur(sigma=(0.1, 2.0), p=0.2),
            PixelNoise(std=(0.02, 0.12), coarsest=3, p=0.3),
        ]
    elif policy == "strong":
        steps = [
            K.RandomResizedCrop((height, width), scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), p=1.0),
            K.RandomAffine(degrees=20, translate=(0.15, 0.15), shear=15, p=0.9),
            K.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, p=0.8),
            K.RandomGaussianBlur((3, 3), sigma=(0.1, 1.0), p=0.2),
            K.RandomErasing(scale=(0.02, 0.2), p=0.25),
        ]
    elif policy == "randaugment":
        steps = [light_warp, RandAugment(n=2, m=9)]
    else:
        steps = [light_warp, TrivialAugment()]
    if flip:
        steps.append(K.RandomHorizontalFlip())
    # nn.Sequential, not kornia's AugmentationSequential: no masks or boxes travel with
    # the images, and the container's bookkeeping costs more than a small batch's warp.
    return nn.Sequential(*steps)


def _light_warp() -> nn.Module:
    """The light policy's affine warp, resampled bilinearly or (30% of batches) by the nearest
    pixel.

    A model that only ever sees smoothly resampled pixels is thrown by images that reach
    it blocky (a small image upscaled by its nearest pixel): with bilinear warps alone the
    robustness benchmark's "32 px nearest" digits scored 9 points below native, with this
    mix about 4 (BENCHMARKS.md).
    """
    return AffineWarp(degrees=10, translate=0.125, scale=(0.9, 1.2), shear=8, nearest_share=0.3)


class AffineWarp(nn.Module):
    """A random rotation, zoom per axis, shear along x and shift per image, about the centre,
    as one ``grid_sample`` over the batch; bilinear, or by the nearest pixel for a
    ``nearest_share`` of the batches. Vacated pixels are black.

    kornia's ``RandomAffine`` draws the same kind of warp through some forty small tensor
    operations per call: on the demo's batches of 16 images of 16 px it took 0.6 ms a
    batch for 0.02 ms of resampling, and held the augmented training loop to 0.83 of the
    plain one. Here every parameter is drawn in one ``torch.rand`` (the seeded generator)
    and the warp is torch's own ``affine_grid`` and ``grid_sample``.
    """

    def __init__(
        self,
        degrees: float,
        translate: float,
        scale: tuple[float, float],
        shear: float,
        nearest_share: float = 0.0,
    ):
        super().__init__()
        self.degrees, self.translate, self.scale, self.shear = degrees, translate, scale, shear
        self.nearest_share = nearest_share

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = pixels.shape
        nearest = float(torch.rand(())) < self.nearest_share
        draws = torch.rand(batch, 6).to(pixels.device)
        angle = torch.deg2rad((2 * draws[:, 0] - 1) * self.degrees)
        low, high = self.scale
        zoom_x, zoom_y = low + (high - low) * draws[:, 1], low + (high - low) * draws[:, 2]
        shear = torch.tan(torch.deg2rad((2 * draws[:, 3] - 1) * self.shear))
        cos, sin = torch.cos(angle), torch.sin(angle)
        # the forward map, in pixels about the centre: rotation @ shear @ zoom
        forward = torch.stack(
            [
                torch.stack([cos * zoom_x, (cos * shear - sin) * zoom_y], -1),
                torch.stack([sin * zoom_x, (sin * shear + cos) * zoom_y], -1),
            ],
            -2,
        )
        # grid_sample asks, per output pixel, where to read: the inverse map, in the
        # normalised coordinates of a (height, width) image
        to_unit = torch.tensor([2 / width, 2 / height], device=pixels.device)
        inverse = torch.linalg.inv(forward) * to_unit[:, None] / to_unit[None, :]
        shift = (2 * draws[:, 4:6] - 1) * (2 * self.translate)  # up to translate x the side
        theta = torch.cat([inverse, -(inverse @ shift.unsqueeze(-1))], dim=-1)
        grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
        mode = "nearest" if nearest else "bilinear"
        return F.grid_sample(pixels, grid, mode=mode, padding_mode="zeros", align_corners=False)


class GaussianBlur(nn.Module):
    """A Gaussian blur of a random ``sigma`` (pixels) on a share ``p`` of the images: two
    separable grouped convolutions over the chosen images, edges replicated.

    kornia's ``RandomGaussianBlur`` spent 1.6 ms a call on the demo's batches of 16 images
    of 16 px, more than the light policy's warp and jitter together; this takes 0.6 ms.
    """

    def __init__(self, sigma: tuple[float, float], p: float):
        super().__init__()
        self.sigma, self.p = sigma, p

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        draws = torch.rand(len(pixels), 2)
        chosen = torch.nonzero(draws[:, 0] < self.p).flatten()
        if not len(chosen):
            return pixels
        low, high = self.sigma
        sigma = low + (high - low) * draws[chosen, 1]
        radius = math.ceil(2 * high)
        taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernels = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2))
        kernels = (kernels / kernels.sum(dim=1, keepdim=True)).to(pixels)
        picked = pixels[chosen.to(pixels.device)]
        batch, channels, height, width = picked.shape
        weight = kernels.repeat_interleave(channels, dim=0)  # one kernel per image and channel
        flat = picked.reshape(1, batch * channels, height, width)
        flat = F.pad(flat, (radius, radius, 0, 0), mode="replicate")
        flat = F.conv2d(flat, weight[:, None, None, :], groups=batch * channels)
        flat = F.pad(flat, (0, 0, radius, radius), mode="replicate")
        flat = F.conv2d(flat, weight[:, None, :, None], groups=batch * channels)
        blurred = pixels.clone()
        blurred[chosen.to(pixels.device)] = flat.reshape(batch, channels, height, width)
        return blurred


class PixelNoise(nn.Module):
    """Gaussian noise of a random strength (``std`` of the [0, 1] range) on a share ``p`` of
    the images, the same on every channel (as a photo's noise is, mostly: brightness),
    drawn at the input's resolution or up to ``coarsest`` times coarser and upsampled.

    Noise reaches a model at the size it was made: a small noisy photo upscaled to the
    model's input brings blobs, not single pixels. Trained on neither, EfficientNet-Lite0
    lost about two thirds of its Fashion-MNIST accuracy to noise of 10% of the range
    (BENCHMARKS.md, robustness). The values are clamped to [0, 1] afterwards, as a photo's are.
    """

    def __init__(self, std: tuple[float, float], coarsest: int, p: float):
        super().__init__()
        self.std, self.coarsest, self.p = std, coarsest, p

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = pixels.shape
        draws = torch.rand(batch, 2)
        low, high = self.std
        std = torch.where(draws[:, 0] < self.p, low + (high - low) * draws[:, 1], 0.0)
        factor = int(torch.randint(1, self.coarsest + 1, ()))
        noise = torch.randn(batch, 1, math.ceil(height / factor), math.ceil(width / factor))
        if factor > 1:
            noise = F.interpolate(noise, size=(height, width), mode="bilinear")
        noise = noise.to(pixels.device) * std.to(pixels.device)[:, None, None, None]
        return pixels + noise


class BatchAugmenter:
    """Turns a training batch into the model's input and the loss targets.

    ``augmenter(images, labels, epoch, batch)`` takes ``(B, H, W, 3)`` uint8 pixels
    and class ids on the device and returns normalised ``(B, 3, H, W)`` float
    pixels and targets: the class ids, or ``(B, classes)`` probabilities when
    mixup or cutmix mixed the batch (cross-entropy takes either).
    """

    def __init__(
        self,
        preprocessing: Preprocessing,
        num_classes: int,
        *,
        policy: str = "light",
        flip: bool = False,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        seed: int = 0,
        process_index: int = 0,
    ):
        self.preprocessing = preprocessing
        self.num_classes = num_classes
        self.pipeline = build_policy(policy, preprocessing.height, preprocessing.width, flip)
        self.mixup = mixup
        self.cutmix = (
            K.RandomCutMixV2(beta=cutmix, data_keys=["input", "class"], use_correct_lambda=True)
            if cutmix
            else None
        )
        self.seed = seed
        self.process_index = process_index

    @property
    def active(self) -> bool:
        return self.pipeline is not None or bool(self.mixup) or self.cutmix is not None

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, epoch: int, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active:
            return self.preprocessing.normalize(images), labels
        # kornia draws its parameters on the CPU generator, wherever the pixels are;
        # seeding only that one skips torch.manual_seed's per-backend bookkeeping
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self._batch_seed(epoch, batch))
            pixels = images.permute(0, 3, 1, 2).float().div_(255)
            if self.pipeline is not None:
                pixels = self.pipeline(pixels).clamp_(0, 1)
            pixels, targets = self._mix(pixels, labels)
        # back to the (B, H, W, 3) 0-255 layout the shared normalisation reads, in that memory
        # order too: it then hands the model channels-last pixels, as for a batch that is not
        # augmented, and a CNN's training step on CPU is about 20% slower on the other order
        channels_last = pixels.mul_(255).permute(0, 2, 3, 1).contiguous()
        return self.preprocessing.normalize(channels_last), targets

    def _batch_seed(self, epoch: int, batch: int) -> int:
        key = ((self.seed * 1_000_003 + epoch) * 1_000_003 + batch) * 1_009 + self.process_index
        return key % (2**63)

    def _mix(self, pixels: torch.Tensor, labels: torch.Tensor):
        """Mixup or cutmix (one of the two per batch, at random, when both are on)."""
        use_cutmix = self.cutmix is not None and (not self.mixup or bool(torch.rand(()) < 0.5))
        if use_cutmix:
            pixels, mixed = self.cutmix(pixels, labels)
            _, other, kept = mixed[0].T  # (label, partner's label, share of own pixels) per image
            return pixels, self._soft(labels, other.long(), kept)
        if self.mixup:
            # kornia's RandomMixUpV2 draws its weight uniformly from a range, not from
            # Beta(alpha, alpha) as mixup is defined, so the two lines are written here.
            kept = torch.distributions.Beta(self.mixup, self.mixup).sample(()).to(pixels.device)
            partner = torch.randperm(len(labels)).to(labels.device)
            pixels = kept * pixels + (1 - kept) * pixels[partner]
            return pixels, self._soft(labels, labels[partner], kept.expand(len(labels)))
        return pixels, labels

    def _soft(self, labels: torch.Tensor, other: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        kept = kept.float().unsqueeze(1)
        own = F.one_hot(labels, self.num_classes).float()
        return kept * own + (1 - kept) * F.one_hot(other, self.num_classes).float()


def count_smaller(sources: Iterable[Any], height: int, width: int) -> tuple[int, int]:
    """(smaller, looked at): how many of up to SIZE_SAMPLE images are below ``height`` x ``width``.

    Files are measured from their header (no decoding); a Hugging Face dataset's
    rows are skipped, since only decoding them tells their size.
    """
    smaller = seen = 0
    for source in sources:
        if seen == SIZE_SAMPLE:
            break
        size = _size(source)
        if size is None:
            continue
        seen += 1
        smaller += size[0] < width or size[1] < height
    return smaller, seen


def largest_side(sources: Iterable[Any]) -> int | None:
    """The longest side among up to SIZE_SAMPLE images whose size is known without decoding."""
    sides = []
    for source in sources:
        if len(sides) == SIZE_SAMPLE:
            break
        size = _size(source)
        if size is not None:
            sides.append(max(size))
    return max(sides, default=None)


def _size(source: Any) -> tuple[int, int] | None:
    if isinstance(source, Image.Image):
        return source.size
    if isinstance(source, np.ndarray):
        return (source.shape[1], source.shape[0])
    if isinstance(source, str | Path):
        try:
            with Image.open(source) as image:
                return image.size
        except OSError:
            return None
    return None


def warn_if_upscaled(sources: list[Any], preprocessing: Preprocessing, policy: str) -> str | None:
    """The warning for training images smaller than the model's input, which crops magnify."""
    if policy == "none":
        return None
    smaller, seen = count_smaller(sources, preprocessing.height, preprocessing.width)
    if not smaller:
        return None
    message = (
        f"{smaller} of {seen} training images looked at are smaller than the "
        f"{preprocessing.height}x{preprocessing.width} input: they are upscaled, and "
        f"--augment {policy}'s random crops magnify them further; pass a smaller "
        "--image-size, or --augment none if the crops lose the subject"
    )
    log.warning(message)
    return message
