"""training.augment and training.ema on real digits: shapes, seeding, policies, mixing, EMA."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from contract.images import Preprocessing
from tests.support.images import digit_images
from training.augment import (
    POLICIES,
    AffineWarp,
    BatchAugmenter,
    GaussianBlur,
    PixelNoise,
    count_smaller,
    warn_if_upscaled,
)
from training.ema import weight_average

SIZE = 16
PREPROCESSING = Preprocessing(SIZE, SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Eight real digits (0-3, two each) as the (B, H, W, 3) uint8 cache holds them."""
    images = [image.convert("RGB") for d in range(4) for image in digit_images(d, 2)]
    pixels = torch.from_numpy(np.stack([PREPROCESSING.resize(image) for image in images]))
    return pixels, torch.tensor([d for d in range(4) for _ in range(2)])


def augment(images, labels, epoch=0, step=0, **options):
    return BatchAugmenter(PREPROCESSING, 4, **options)(images, labels, epoch, step)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_gives_model_input_and_class_ids(batch, policy):
    pixels, targets = augment(*batch, policy=policy)
    assert pixels.shape == (8, 3, SIZE, SIZE) and pixels.dtype == torch.float32
    assert torch.equal(targets, batch[1])
    assert pixels.min() >= -1 - 1e-5 and pixels.max() <= 1 + 1e-5  # (x - 0.5) / 0.5 of [0, 1]


def test_none_is_the_plain_normalisation(batch):
    pixels, targets = augment(*batch, policy="none")
    assert torch.equal(pixels, PREPROCESSING.normalize(batch[0]))
    assert targets is batch[1]


@pytest.mark.parametrize("option", [{"policy": "light"}, {"policy": "none", "mixup": 0.2}])
def test_augmented_batches_reach_the_model_in_the_plain_memory_order(batch, option):
    """Channels-last, as the plain normalisation gives: a CNN trains slower on the other."""
    pixels, _ = augment(*batch, **option)
    plain = PREPROCESSING.normalize(batch[0])
    assert plain.is_contiguous(memory_format=torch.channels_last)
    assert pixels.stride() == plain.stride()


@pytest.mark.parametrize("policy", [p for p in POLICIES if p != "none"])
def test_seeded_by_seed_epoch_and_batch(batch, policy):
    first, _ = augment(*batch, policy=policy, seed=3, epoch=2, step=5)
    again, _ = augment(*batch, policy=policy, seed=3, epoch=2, step=5)
    assert torch.equal(first, again)
    for other in ({"seed": 4, "epoch": 2, "step": 5}, {"seed": 3, "epoch": 1, "step": 5}):
        assert not torch.equal(first, augment(*batch, policy=policy, **other)[0])
    assert not torch.equal(first, augment(*batch, policy=policy, seed=3, epoch=2, step=6)[0])


def test_the_global_random_stream_is_left_alone(batch):
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    augment(*batch, policy="strong", mixup=0.4, cutmix=1.0)
    assert torch.equal(torch.rand(4), expected)


def test_policies_differ(batch):
    outputs = {policy: augment(*batch, policy=policy)[0] for policy in POLICIES}
    for a in POLICIES:
        for b in POLICIES:
            if a < b:
                assert not torch.allclose(outputs[a], outputs[b]), (a, b)
    flipped, _ = augment(*batch, policy="light", flip=True)
    assert not torch.equal(flipped, outputs["light"])


@pytest.mark.parametrize("option", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.4, "cutmix": 1}])
def test_mixing_returns_class_probabilities(batch, option):
    pixels, targets = augment(*batch, policy="none", **option)
    assert pixels.shape == (8, 3, SIZE, SIZE)
    assert targets.shape == (8, 4)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(8))
    assert (targets >= 0).all()
    own = targets[torch.arange(8), batch[1]]
    assert (own > 0).all()  # every image keeps some of its own label
    assert (targets.max(dim=1).values < 1).any()  # and some are mixed


def test_mixup_blends_each_image_with_a_partner_in_its_label_share(batch):
    images, labels = batch
    pixels, targets = augment(images, labels, policy="none", mixup=0.4, seed=1)
    blended = pixels * 0.5 + 0.5  # undo the (x - 0.5) / 0.5 normalisation
    originals = images.permute(0, 3, 1, 2).float() / 255
    own = targets[torch.arange(8), labels]
    checked = 0
    for i in (
        torch.nonzero(own < 1).flatten().tolist()
    ):  # partner of another class: its share is the weight
        candidates = [own[i] * originals[i] + (1 - own[i]) * originals[j] for j in range(8)]
        assert any(torch.allclose(blended[i], c, atol=1e-4) for c in candidates), i
        checked += 1
    assert checked


def test_count_smaller_reads_sizes_without_decoding(tmp_path):
    small = Image.new("RGB", (8, 8))
    large_file = tmp_path / "large.png"
    Image.new("RGB", (32, 32)).save(large_file)
    small_file = tmp_path / "small.png"
    small.save(small_file)
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    sources = [small, large_file, small_file, not_an_image, ("dataset", 0, "image")]
    assert count_smaller(sources, 16, 16) == (2, 3)


def test_small_images_are_warned_about_unless_augmentation_is_off(caplog):
    digits = digit_images(1, 3)  # 8x8
    with caplog.at_level(logging.WARNING, logger="training.augment"):
        message = warn_if_upscaled(digits, PREPROCESSING, "light")
    assert message is not None and "3 of 3" in message and "16x16" in message
    assert "--augment none" in message and message in caplog.text
    assert warn_if_upscaled(digits, PREPROCESSING, "none") is None
    large = [image.resize((64, 64)) for image in digits]
    assert warn_if_upscaled(large, PREPROCESSING, "light") is None


def test_ema_warms_up_then_averages_with_the_decay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = weight_average(model, decay=0.9)
    start = model[0].weight.detach().clone()
    ema.update_parameters(model)  # the first update copies
    torch.testing.assert_close(ema.module[0].weight, start)

    expected = start
    for n in range(1, 40):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        model(torch.randn(4, 3))  # BatchNorm counts a batch
        ema.update_parameters(model)
        decay = min(0.9, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * model[0].weight.detach()
        torch.testing.assert_close(ema.module[0].weight, expected)
    assert int(ema.module[1].num_batches_tracked) == int(model[1].num_batches_tracked)
    assert not any(p.requires_grad for p in ema.parameters())


def test_the_affine_warp_without_ranges_returns_the_batch():
    pixels = torch.rand(4, 3, 12, 10)
    same = AffineWarp(degrees=0, translate=0, scale=(1, 1), shear=0)(pixels)
    torch.testing.assert_close(same, pixels, atol=1e-5, rtol=0)


def test_a_nearest_pixel_warp_makes_no_new_values():
    pixels = torch.randint(0, 4, (4, 3, 16, 16)).float() / 3
    warped = AffineWarp(degrees=10, translate=0.125, scale=(0.9, 1.2), shear=8, nearest_share=1)(
        pixels
    )
    assert set(warped.unique().tolist()) <= set(pixels.unique().tolist())
    assert not torch.equal(warped, pixels)


def test_pixel_noise_is_the_same_on_every_channel_for_its_share_of_images():
    torch.manual_seed(0)
    pixels = torch.full((400, 3, 12, 12), 0.5)
    noisy = PixelNoise(std=(0.05, 0.1), coarsest=1, p=0.3)(pixels)
    changed = (noisy != pixels).flatten(1).any(dim=1)
    assert 0.2 < changed.float().mean() < 0.4  # about p of the images
    delta = (noisy - pixels)[changed]
    assert torch.equal(delta[:, 0], delta[:, 1]) and torch.equal(delta[:, 0], delta[:, 2])
    assert 0.04 < delta.std(dim=(1, 2, 3)).mean() < 0.11


def test_pixel_noise_is_drawn_at_the_input_size_or_coarser():
    torch.manual_seed(0)
    noise = PixelNoise(std=(0.1, 0.1), coarsest=3, p=1)
    pixels = torch.zeros(16, 1, 48, 48)
    steps = [float((b[..., 1:] - b[..., :-1]).abs().mean()) for b in map(noise, [pixels] * 30)]
    assert max(steps) > 0.1  # pixel by pixel: neighbours independent (about 0.11)
    assert min(steps) < 0.05  # upsampled from a third of the size: neighbours alike


def test_gaussian_blur_blurs_its_share_of_images_as_kornia_does():
    import kornia

    torch.manual_seed(0)
    pixels = torch.rand(200, 3, 20, 20)
    blurred = GaussianBlur(sigma=(1.5, 1.5), p=0.3)(pixels)
    changed = (blurred != pixels).flatten(1).any(dim=1)
    assert 0.2 < changed.float().mean() < 0.4  # about p of the images, the rest untouched
    expected = kornia.filters.gaussian_blur2d(
        pixels[changed], (9, 9), (1.5, 1.5), border_type="replicate"
    )
    torch.testing.assert_close(blurred[changed], expected, atol=0.02, rtol=0)
    assert blurred[changed].std() < pixels[changed].std() / 2  # noise is smoothed away
