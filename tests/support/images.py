"""Real images for tests: scikit-learn's handwritten digits as PIL images and labelled
folders, and one file of each kind of unusable image."""

from __future__ import annotations

import io
import random
import struct
import zlib
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image


def digit_image(pixels: np.ndarray) -> Image.Image:
    """One scikit-learn digit (8x8, values 0..16) as an 8-bit grayscale image."""
    return Image.fromarray((pixels.reshape(8, 8) * (255 / 16)).astype(np.uint8), mode="L")


@cache
def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data, digits.target


def digit_images(digit: int, n: int, start: int = 0) -> list[Image.Image]:
    """``n`` real images of ``digit`` (the ``start``-th onwards)."""
    data, target = _digits()
    rows = np.flatnonzero(target == digit)[start : start + n]
    return [digit_image(data[row]) for row in rows]


def write_classes(root: Path, counts: dict[str, int], start: int = 0) -> Path:
    """``root/<label>/<label>_<i>.png`` for each label; a label names a digit (0-9)."""
    for label, n in counts.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(digit_images(int(label) % 10, n, start)):
            image.save(folder / f"{label}_{start + i:03d}.png")
    return root


def shuffle_labels(root: Path, seed: int = 0) -> Path:
    """Move the images of a class-folder tree between its folders at random (same counts)."""
    files = sorted(root.glob("*/*.png"))
    targets = [path.parent for path in files]
    random.Random(seed).shuffle(targets)
    for i, (path, folder) in enumerate(zip(files, targets, strict=True)):
        path.rename(folder / f"shuffled_{i:04d}_{path.name}")
    return root


def truncated_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


def bad_exif_png() -> bytes:
    """A valid PNG whose EXIF block has a broken TIFF header: reading the orientation raises
    ``SyntaxError``, outside the errors a decoder is expected to raise."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", exif=b"Exif\x00\x00XX\x00*\x00\x00\x00\x08")
    return buffer.getvalue()


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>'

BAD_FILES = {
    "zero.png": b"",
    "notes.txt": b"these are notes, not an image\n",
    "fake.jpg": b"\xff\xd8\xff\xe0 not really a jpeg",
    "cut.png": truncated_png(),
    "bad-exif.png": bad_exif_png(),
    "vector.svg": SVG,
}


def add_bad_files(folder: Path) -> list[Path]:
    """One of each kind of unusable file in ``folder``."""
    paths = []
    for name, data in BAD_FILES.items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def blank_png(width: int, height: int, bit_depth: int = 16) -> bytes:
    """A black greyscale PNG of any size, compressed row by row (small on the wire and in
    memory however many pixels it declares: what a hostile client sends)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    row = b"\0" * (1 + width * bit_depth // 8)
    compressor = zlib.compressobj(9)
    stream = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")
    )


def ico_holding(png: bytes) -> bytes:
    """An ICO file whose one icon is ``png`` (ICO icons may be PNG files of any size)."""
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def many_page_tiff(pages: int, size: tuple[int, int]) -> bytes:
    """A TIFF of ``pages`` blank bilevel pages, every page's directory pointing at the same
    deflated strip: thousands of pages of any size in a few hundred kilobytes."""
    width, height = size
    strip = zlib.compress(b"\0" * ((width + 7) // 8 * height), 9)
    entry_count, first_ifd = 9, 8 + len(strip)
    ifd_size = 2 + 12 * entry_count + 4
    directories = []
    for page in range(pages):
        following = first_ifd + (page + 1) * ifd_size if page + 1 < pages else 0
        entries = [
            (256, 4, width),  # ImageWidth, LONG
            (257, 4, height),  # ImageLength
            (258, 3, 1),  # BitsPerSample, SHORT
            (259, 3, 8),  # Compression: deflate
            (262, 3, 1),  # PhotometricInterpretation: black is zero
            (273, 4, 8),  # StripOffsets: the one shared strip
            (277, 3, 1),  # SamplesPerPixel
            (278, 4, height),  # RowsPerStrip
            (279, 4, len(strip)),  # StripByteCounts
        ]
        packed = b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in entries)
        directories.append(struct.pack("<H", entry_count) + packed + struct.pack("<I", following))
    return b"II*\0" + struct.pack("<I", first_ifd) + strip + b"".join(directories)


def rle8_bmp(width: int = 4, height: int = 2) -> bytes:
    """A run-length encoded 8-bit BMP (Pillow decodes these in Python, not C)."""
    rows = b"".join(bytes([width, 1]) + b"\0\0" for _ in range(height)) + b"\0\1"
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(rows), 2835, 2835, 256, 0)
    header = struct.pack("<2sIHHI", b"BM", offset + len(rows), 0, 0, offset)
    return header + info + palette + rows


# Real photos that installed packages ship, with the ImageNet-1k classes an ImageNet
# classifier gives them: (file, top-1 class, classes expected among the top 3): academic
# gown, mortarboard and military uniform; palace; daisy.
PHOTOS = (
    ("matplotlib", "sample_data/grace_hopper.jpg", 400, {400, 667, 652}),
    ("sklearn", "datasets/images/china.jpg", 698, {698}),  # palace
    ("sklearn", "datasets/images/flower.jpg", 985, {985}),  # daisy
)


def photo_path(package: str, relative: str) -> Path:
    if package == "matplotlib":
        import matplotlib

        return Path(matplotlib.get_data_path()) / relative
    import sklearn

    return Path(sklearn.__file__).parent / relative
