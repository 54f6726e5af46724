"""decode_image: any PIL mode to RGB, EXIF orientation, bad input by reason; Preprocessing
equals the transformers processor it saves."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from contract.images import ImageError, Preprocessing, decode_image, to_rgb
from tests.support.images import blank_png, ico_holding, many_page_tiff, rle8_bmp


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def palette_image(transparent: bool) -> Image.Image:
    image = Image.new("P", (6, 4), 1)
    image.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    if transparent:
        image.info["transparency"] = 1
    return image


def sixteen_bit(value: int) -> Image.Image:
    image = Image.new("I;16", (6, 4))
    image.putdata([value] * 24)
    return image


@pytest.mark.parametrize(
    ("image", "fmt", "mode", "expected"),
    [
        (Image.new("L", (6, 4), 100), "PNG", "L", (100, 100, 100)),
        (Image.new("LA", (6, 4), (100, 255)), "PNG", "LA", (100, 100, 100)),
        (Image.new("LA", (6, 4), (100, 0)), "PNG", "LA", (255, 255, 255)),
        (palette_image(transparent=False), "PNG", "P", (200, 30, 40)),
        (palette_image(transparent=True), "PNG", "P", (255, 255, 255)),
        (Image.new("RGBA", (6, 4), (10, 20, 30, 255)), "PNG", "RGBA", (10, 20, 30)),
        (Image.new("RGBA", (6, 4), (10, 20, 30, 0)), "PNG", "RGBA", (255, 255, 255)),
        (Image.new("CMYK", (6, 4), (0, 0, 0, 0)), "TIFF", "CMYK", (255, 255, 255)),
        (Image.new("CMYK", (6, 4), (0, 255, 255, 0)), "TIFF", "CMYK", (255, 0, 0)),
        (sixteen_bit(65535), "PNG", "I;16", (255, 255, 255)),
        (sixteen_bit(32896), "PNG", "I;16", (128, 128, 128)),
    ],
)
def test_every_mode_becomes_rgb(image, fmt, mode, expected):
    data = encode(image, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode  # the file really holds that mode
    decoded = decode_image(data)
    assert decoded.mode == "RGB"
    assert decoded.size == (6, 4)
    assert decoded.getpixel((3, 2)) == expected


def test_cmyk_jpeg_becomes_rgb():
    decoded = decode_image(encode(Image.new("CMYK", (16, 16), (0, 0, 0, 0)), "JPEG"))
    assert decoded.mode == "RGB"
    assert all(channel > 245 for channel in decoded.getpixel((8, 8)))


def two_colour_landscape() -> Image.Image:
    """40x20: left half red, right half blue."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    return image


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes(), quality=95)


def is_red(pixel) -> bool:
    return pixel[0] > 200 and pixel[2] < 60


def is_blue(pixel) -> bool:
    return pixel[2] > 200 and pixel[0] < 60


def test_exif_orientation_rotates_the_pixels(tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(with_orientation(two_colour_landscape(), 6))  # 6: rotate 90 clockwise
    raw = Image.open(path)
    assert raw.size == (40, 20)
    assert raw.getexif()[0x0112] == 6

    decoded = decode_image(path)
    assert decoded.size == (20, 40)  # portrait now
    assert is_red(decoded.getpixel((10, 5)))  # the left half is on top
    assert is_blue(decoded.getpixel((10, 35)))


def test_exif_orientation_upside_down():
    decoded = decode_image(with_orientation(two_colour_landscape(), 3))  # 3: rotate 180
    assert decoded.size == (40, 20)
    assert is_blue(decoded.getpixel((5, 10)))
    assert is_red(decoded.getpixel((35, 10)))


def test_without_exif_nothing_turns():
    decoded = decode_image(with_orientation(two_colour_landscape(), 1))
    assert decoded.size == (40, 20)
    assert is_red(decoded.getpixel((5, 10)))


def truncated_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"just some text, not an image\n", "not_an_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not_an_image"),
        (truncated_png(), "truncated"),
    ],
)
def test_bad_input_has_a_reason(data, reason):
    with pytest.raises(ImageError) as err:
        decode_image(data)
    assert err.value.reason == reason
    assert str(err.value)


def test_pixel_limit_is_checked_before_decoding():
    data = encode(Image.new("L", (300, 200)), "PNG")
    with pytest.raises(ImageError) as err:
        decode_image(data, max_pixels=10_000)
    assert err.value.reason == "too_many_pixels"
    assert "60000" in str(err.value)
    assert decode_image(data, max_pixels=None).size == (300, 200)


def test_decodes_from_path_and_bytes_alike(tmp_path):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (9, 7, 3), dtype=np.uint8))
    path = tmp_path / "x.png"
    image.save(path)
    assert np.array_equal(np.asarray(decode_image(path)), np.asarray(image))
    assert np.array_equal(
        np.asarray(decode_image(str(path))), np.asarray(decode_image(path.read_bytes()))
    )


def random_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(23, 17), (8, 8), (40, 31), (16, 16)]
    return [
        Image.fromarray(rng.integers(0, 255, (*sizes[i % 4][::-1], 3), dtype=np.uint8))
        for i in range(n)
    ]


def test_preprocessing_equals_the_processor_it_saves(tmp_path):
    from transformers import AutoImageProcessor

    preprocessing = Preprocessing(12, 20, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    preprocessing.to_processor().save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    images = random_images(6)

    ours = preprocessing(images)
    theirs = processor(images, return_tensors="pt")["pixel_values"]
    assert ours.shape == (6, 3, 12, 20)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert Preprocessing.from_pretrained(tmp_path) == preprocessing


def test_normalize_is_batched_resize_then_scale():
    preprocessing = Preprocessing(4, 4, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    white = Image.new("RGB", (10, 10), (255, 255, 255))
    black = Image.new("RGB", (7, 3), (0, 0, 0))
    batch = preprocessing([white, black])
    assert torch.allclose(batch[0], torch.ones(3, 4, 4))
    assert torch.allclose(batch[1], -torch.ones(3, 4, 4))


def test_image_size_overrides_the_processor_size():
    processor = Preprocessing(224, 224, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)).to_processor()
    preprocessing = Preprocessing.from_processor(processor, image_size=(16, 16))
    assert (preprocessing.height, preprocessing.width) == (16, 16)
    assert preprocessing.mean == pytest.approx((0.1, 0.2, 0.3))
    assert preprocessing.std == pytest.approx((0.4, 0.5, 0.6))


ALLOWED = {
    "JPEG": {},
    "PNG": {},
    "WEBP": {"lossless": True},
    "GIF": {},
    "BMP": {},
    "TIFF": {"compression": "tiff_lzw"},
}


@pytest.mark.parametrize("fmt", ALLOWED)
def test_each_allowed_format_decodes(fmt):
    decoded = decode_image(encode(Image.new("RGB", (12, 10), (200, 30, 40)), fmt, **ALLOWED[fmt]))
    assert decoded.size == (12, 10)
    assert np.abs(np.subtract(decoded.getpixel((5, 5)), (200, 30, 40))).max() <= 8


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (ico_holding(encode(Image.new("RGB", (16, 16)), "PNG")), "ICO"),
        (ico_holding(blank_png(10_000, 10_000, bit_depth=8)), "ICO"),
        (encode(Image.new("RGB", (8, 8)), "QOI"), "QOI"),
        (encode(Image.new("RGB", (8, 8)), "PCX"), "PCX"),
        (encode(Image.new("RGB", (8, 8)), "PPM"), "PPM"),
        (encode(Image.new("RGB", (8, 8)), "EPS"), "EPS"),
        (encode(Image.new("RGB", (8, 8)), "JPEG2000"), "JPEG2000"),
        (rle8_bmp(), "bmp_rle"),
    ],
    ids=["ico", "ico-with-a-100-mpx-png", "qoi", "pcx", "ppm", "eps", "jpeg2000", "rle-bmp"],
)
def test_other_formats_are_refused_before_any_decoder_runs(data, named):
    started = time.perf_counter()
    with pytest.raises(ImageError) as err:
        decode_image(data, max_pixels=None)
    assert time.perf_counter() - started < 0.5
    assert err.value.reason == "unsupported_format"
    assert named in str(err.value)
    assert "accepted: JPEG, PNG, WEBP, GIF, BMP, TIFF" in str(err.value)


def test_the_first_tiff_page_is_size_checked_and_decoded():
    with pytest.raises(ImageError) as err:
        decode_image(many_page_tiff(1000, (6000, 5000)))
    assert err.value.reason == "too_many_pixels"
    decoded = decode_image(many_page_tiff(50, (40, 30)))
    assert decoded.size == (40, 30)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("I;16", 200, 0),  # dark 16-bit stays dark: decided by the mode, not the values
        ("I;16", 65535, 255),
        ("I;16B", 0x8000, 128),
        ("I", 200, 0),
        ("I", 70_000, 255),
        ("I", -5, 0),
        ("F", 100.4, 100),
        ("F", 300.0, 255),
    ],
)
def test_high_bit_depths_scale_by_mode(mode, value, expected):
    image = Image.new(mode, (6, 4))
    image.putdata([value] * 24)
    assert to_rgb(image).getpixel((2, 2)) == (expected,) * 3


def test_a_dark_16_bit_png_stays_dark():
    decoded = decode_image(encode(sixteen_bit(250), "PNG"))
    assert decoded.getpixel((1, 1)) == (0, 0, 0)


def test_sixteen_bit_images_convert_without_float_or_numpy_copies():
    width, height = 2000, 1500
    data = blank_png(width, height)
    tracemalloc.start()
    try:
        decoded = decode_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.size == (width, height)
    # Python and numpy allocations only (Pillow's own are not traced): a float64 copy of
    # the pixels would be 8 bytes each
    assert peak < 0.5 * width * height, f"{peak / (width * height):.2f} bytes a pixel"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_large_images_shrink_towards_the_model_size_while_decoding(fmt):
    image = Image.fromarray(np.full((1200, 1600, 3), (10, 120, 240), dtype=np.uint8))
    decoded = decode_image(encode(image, fmt), draft_size=(100, 100))
    # JPEG scales in its DCT to at least the size asked; the others reduce to at least twice
    assert (100 if fmt == "JPEG" else 200) <= min(decoded.size) < 400
    assert decoded.size[0] / decoded.size[1] == pytest.approx(4 / 3, abs=0.01)  # aspect kept
    assert np.abs(np.subtract(decoded.getpixel((50, 50)), (10, 120, 240))).max() <= 8
    assert decode_image(encode(image, fmt), draft_size=(1000, 1000)).size == (1600, 1200)


def test_a_shrunk_palette_image_keeps_its_colours():
    image = Image.new("P", (900, 900), 1)
    image.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    decoded = decode_image(encode(image, "GIF"), draft_size=(100, 100))
    assert decoded.size == (225, 225)
    assert decoded.getpixel((10, 10)) == (200, 30, 40)


def test_a_gif_frame_larger_than_its_screen_is_what_counts():
    data = bytearray(encode(Image.new("P", (10, 10)), "GIF"))
    descriptor = data.index(b"\x2c")  # the first frame's image descriptor
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", 3000, 2000)
    with pytest.raises(ImageError) as err:
        decode_image(bytes(data), max_pixels=1_000_000)
    assert err.value.reason == "too_many_pixels"
