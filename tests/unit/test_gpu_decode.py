"""service.gpu_decode on CPU: which files go to the batch decoder, the pixels match the CPU
path's for every backbone family's policy (resize, filter, crop, channel order), a filter the
GPU path lacks is refused, a failing decoder leaves everything to the CPU, mixed batches stack
on the device.

nvJPEG itself needs CUDA and torchvision (benchmarks/gpu_check.sh runs it on a GPU); here a
fake batch decoder decodes with PIL into (3, H, W) tensors, as nvJPEG returns them.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from contract.images import Preprocessing, decode_image
from service.gpu_decode import GpuJpegDecoder, stack_pixels, torchvision_available
from training.backbones import FAMILIES, family_processor

PREPROCESSING = Preprocessing(height=24, width=32, mean=(0.5,) * 3, std=(0.5,) * 3)


def encoded(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def photo(width: int = 160, height: int = 120, mode: str = "RGB") -> Image.Image:
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    rgb = np.stack([x, y, (x + y) / 2], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb).convert(mode)


class FakeNvjpeg:
    """Decodes with PIL into (3, H, W) uint8 tensors and remembers each batch it got."""

    def __init__(self, fail: bool = False):
        self.batches: list[int] = []
        self.fail = fail

    def __call__(self, files: list[bytes]) -> list[torch.Tensor]:
        self.batches.append(len(files))
        if self.fail:
            raise RuntimeError("nvjpeg: unsupported")
        arrays = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files]
        return [torch.from_numpy(a.copy()).permute(2, 0, 1) for a in arrays]


def exif_rotated(image: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(image, exif=exif.tobytes())


def test_plain_jpegs_go_to_the_gpu_in_one_batch_and_the_rest_stay_on_cpu():
    fake = FakeNvjpeg()
    decoder = GpuJpegDecoder(PREPROCESSING, max_pixels=100_000, decode_batch=fake)
    files = [
        encoded(photo()),  # 0: plain RGB JPEG
        encoded(photo(), "PNG"),  # 1: not a JPEG
        encoded(photo(mode="L")),  # 2: greyscale JPEG
        encoded(photo(mode="CMYK")),  # 3: CMYK JPEG
        exif_rotated(photo()),  # 4: EXIF rotation
        encoded(photo(400, 300)),  # 5: over the pixel limit
        "base64 text",  # 6: the JSON API's
        b"\xff\xd8\xff not really",  # 7: a JPEG's first bytes only
    ]
    decoded = decoder(files)
    assert sorted(decoded) == [0, 2]
    assert fake.batches == [2]
    assert decoded[0].shape == (24, 32, 3) and decoded[0].dtype == torch.uint8


def test_the_gpu_resize_matches_the_cpu_path():
    file = encoded(photo(), quality=95)
    decoder = GpuJpegDecoder(PREPROCESSING, max_pixels=100_000, decode_batch=FakeNvjpeg())
    on_gpu = decoder([file])[0].numpy().astype(int)
    on_cpu = PREPROCESSING.resize(decode_image(file)).astype(int)
    assert np.abs(on_gpu - on_cpu).mean() < 1.0
    assert np.abs(on_gpu - on_cpu).max() <= 8


def family_policy(family: str) -> Preprocessing:
    return Preprocessing.from_processor(family_processor(family, 32))


def cpu_pixels(file: bytes, policy: Preprocessing) -> np.ndarray:
    """What the service's CPU path makes of a file (JPEG draft decoding included)."""
    return policy.resize(decode_image(file, draft_size=policy.draft_size))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", [(160, 120), (90, 150), (20, 24)])
def test_each_family_gets_the_pixels_it_was_trained_on(family, size):
    """Landscape, portrait and smaller than the crop (zero padding): the GPU path's pixels are
    the CPU path's, and far from what a plain squash to the model's size would give."""
    policy = family_policy(family)
    file = encoded(photo(*size), quality=95)
    decoder = GpuJpegDecoder(policy, max_pixels=100_000, decode_batch=FakeNvjpeg())
    on_gpu = decoder([file])[0].numpy().astype(int)
    on_cpu = cpu_pixels(file, policy).astype(int)
    assert on_gpu.shape == on_cpu.shape == (policy.height, policy.width, 3)
    assert np.abs(on_gpu - on_cpu).mean() < 1.0, family
    assert np.abs(on_gpu - on_cpu).max() <= 12, family
    if policy.crops or policy.flip_channel_order:
        squashed = Preprocessing(policy.height, policy.width, policy.mean, policy.std)
        plain = squashed.resize(decode_image(file)).astype(int)
        assert np.abs(plain - on_cpu).mean() > 4 * max(np.abs(on_gpu - on_cpu).mean(), 0.5)


def test_nearest_resampling_matches_pil():
    policy = Preprocessing(24, 32, (0.5,) * 3, (0.5,) * 3, resize_to=40, resample=0)
    file = encoded(photo(), quality=95)
    decoder = GpuJpegDecoder(policy, max_pixels=100_000, decode_batch=FakeNvjpeg())
    on_gpu = decoder([file])[0].numpy().astype(int)
    on_cpu = policy.resize(decode_image(file)).astype(int)
    assert np.abs(on_gpu - on_cpu).mean() < 1.0


@pytest.mark.parametrize("resample", [Image.Resampling.LANCZOS, Image.Resampling.BOX])
def test_a_filter_the_gpu_path_lacks_is_refused_at_start_up(resample):
    policy = Preprocessing(24, 32, (0.5,) * 3, (0.5,) * 3, resample=int(resample))
    with pytest.raises(ValueError, match=f"{resample.name.lower()} resampling.*unset it"):
        GpuJpegDecoder(policy, max_pixels=100_000, decode_batch=FakeNvjpeg())


def test_a_failing_decoder_leaves_the_request_to_the_cpu():
    fake = FakeNvjpeg(fail=True)
    decoder = GpuJpegDecoder(PREPROCESSING, max_pixels=100_000, decode_batch=fake)
    assert decoder([encoded(photo()), encoded(photo())]) == {}
    assert fake.batches == [2]


def test_nothing_to_decode_calls_no_decoder():
    fake = FakeNvjpeg()
    decoder = GpuJpegDecoder(PREPROCESSING, max_pixels=100_000, decode_batch=fake)
    assert decoder([encoded(photo(), "PNG")]) == {}
    assert fake.batches == []


def test_stack_pixels_keeps_host_batches_in_numpy_and_mixes_onto_the_device():
    host = np.full((24, 32, 3), 7, dtype=np.uint8)
    assert isinstance(stack_pixels([host, host]), np.ndarray)
    device = torch.full((24, 32, 3), 9, dtype=torch.uint8)
    mixed = stack_pixels([host, device, host])
    assert isinstance(mixed, torch.Tensor) and mixed.shape == (3, 24, 32, 3)
    assert mixed[:, 0, 0, 0].tolist() == [7, 9, 7]


@pytest.mark.skipif(
    not (torch.cuda.is_available() and torchvision_available()),
    reason="nvJPEG needs a CUDA GPU and torchvision",
)
@pytest.mark.parametrize("family", FAMILIES)
def test_nvjpeg_decodes_a_batch_on_the_gpu(family):
    from service.gpu_decode import nvjpeg

    policy = family_policy(family)
    decoder = GpuJpegDecoder(policy, 100_000, nvjpeg(torch.device("cuda")))
    file = encoded(photo(), quality=95)
    decoded = decoder([file, encoded(photo(mode="L"))])
    assert [image.device.type for image in decoded.values()] == ["cuda", "cuda"]
    on_cpu = cpu_pixels(file, policy).astype(int)
    assert np.abs(decoded[0].cpu().numpy().astype(int) - on_cpu).mean() < 2.0
