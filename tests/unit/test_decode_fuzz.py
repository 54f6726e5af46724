"""Property-based fuzzing of the decoder: random bytes and damaged files of every format
either decode to an RGB image within the pixel limit or raise ``ImageError``, quickly."""

from __future__ import annotations

import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from contract.images import ImageError, decode_image
from tests.support.images import encode, ico_holding, many_page_tiff, rle8_bmp

MAX_PIXELS = 1_000_000
SECONDS_PER_FILE = 2.0
REASONS = {
    "empty",
    "not_an_image",
    "unsupported_format",
    "truncated",
    "too_many_pixels",
    "undecodable",
}


def _photo(mode: str = "RGB", size: tuple[int, int] = (48, 40)) -> Image.Image:
    noise = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(noise).convert(mode)


def _animated_gif() -> bytes:
    frames = [_photo("P"), _photo("P").rotate(90)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


def _sixteen_bit_png() -> bytes:
    return encode(Image.fromarray(np.arange(40 * 48, dtype=np.uint16).reshape(40, 48)), "PNG")


# One valid file per accepted format (and a few that must be refused), to damage.
SEEDS = {
    "jpeg": encode(_photo(), "JPEG", quality=80),
    "progressive-jpeg": encode(_photo(), "JPEG", progressive=True),
    "png-rgba": encode(_photo("RGBA"), "PNG"),
    "png-16-bit": _sixteen_bit_png(),
    "webp": encode(_photo(), "WEBP"),
    "gif-animated": _animated_gif(),
    "bmp": encode(_photo(), "BMP"),
    "tiff-pages": many_page_tiff(3, (40, 30)),
    "tiff-lzw": encode(_photo("CMYK"), "TIFF", compression="tiff_lzw"),
    "ico": ico_holding(encode(_photo(), "PNG")),
    "rle-bmp": rle8_bmp(),
}

FUZZ = settings(
    max_examples=150,
    deadline=None,  # time is asserted per file below, with room for a loaded CI machine
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def check(data: bytes) -> None:
    started = time.perf_counter()
    try:
        image = decode_image(data, max_pixels=MAX_PIXELS, draft_size=(32, 32))
    except ImageError as err:
        assert err.reason in REASONS, err.reason
        assert str(err)
    else:
        assert image.mode == "RGB"
        assert image.width * image.height <= MAX_PIXELS
    assert time.perf_counter() - started < SECONDS_PER_FILE


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    check(data)


@FUZZ
@given(st.sampled_from(sorted(SEEDS)), st.binary(min_size=1, max_size=4096))
def test_valid_signatures_with_random_bodies(seed, body):
    check(SEEDS[seed][:16] + body)


@st.composite
def damaged(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        change = draw(st.sampled_from(["flip", "byte", "insert", "delete"]))
        if change == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif change == "byte":
            data[position] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif change == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[position : position + draw(st.integers(1, 16))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@FUZZ
@given(damaged())
def test_damaged_files_of_every_format(data):
    check(data)
