"""Bad requests of every kind, with the status and error type each must get: the bad-input
tests send them all (tests/service/test_bad_input.py), the error-shape test one of each type
(tests/service/test_errors.py). Sized for the servers started with ``servers.LIMITS``."""

from __future__ import annotations

import base64
import io

from PIL import Image

from tests.support.images import ico_holding, rle8_bmp


def png(size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


def noisy_png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def files(*contents: bytes, field: str = "images") -> list:
    return [(field, (f"{i}.png", data, "image/png")) for i, data in enumerate(contents)]


def post_files(server, *contents: bytes, field: str = "images", **data):
    return server.client.post("/classify", files=files(*contents, field=field), data=data)


def post_json(server, body):
    return server.client.post("/classify_json", json=body)


def chunks(size: int):
    for _ in range(size // 65536 + 1):
        yield b"\0" * 65536


CASES = {
    "not_an_image": lambda s: post_files(s, b"hello, I am a text file"),
    "truncated_png": lambda s: post_files(s, noisy_png()[:2000]),
    "truncated_jpeg": lambda s: post_files(s, jpeg()[: len(jpeg()) // 2]),
    "zero_bytes": lambda s: post_files(s, b""),
    "decompression_bomb": lambda s: post_files(s, png((2000, 2000))),
    "too_many_images": lambda s: post_files(s, *[png()] * 9),
    "too_many_base64_images": lambda s: post_json(
        s, {"images": [base64.b64encode(png()).decode()] * 9}
    ),
    "body_too_large": lambda s: post_files(s, b"\0" * (1024 * 1024 + 1)),
    "chunked_body_too_large": lambda s: s.client.post(
        "/classify_json", content=chunks(1024 * 1024), headers={"content-type": "application/json"}
    ),
    "malformed_json": lambda s: s.client.post(
        "/classify_json", content=b'{"images": ["', headers={"content-type": "application/json"}
    ),
    "json_not_an_object": lambda s: post_json(s, ["not", "an", "object"]),
    "malformed_base64": lambda s: post_json(s, {"images": ["not base64 at all!"]}),
    "base64_of_a_non_image": lambda s: post_json(s, {"images": ["aGVsbG8="]}),
    "no_images": lambda s: post_json(s, {"images": []}),
    "wrong_json_field": lambda s: post_json(s, {"imgs": [base64.b64encode(png()).decode()]}),
    "wrong_form_field": lambda s: post_files(s, png(), field="image"),
    "text_instead_of_file": lambda s: s.client.post("/classify", files={"images": (None, "a.png")}),
    "json_to_the_files_route": lambda s: s.client.post("/classify", json={"images": []}),
    "zero_top_k": lambda s: post_files(s, png(), top_k="0"),
    "text_top_k": lambda s: post_json(
        s, {"images": [base64.b64encode(png()).decode()], "top_k": "x"}
    ),
    "no_multipart_boundary": lambda s: s.client.post(
        "/classify", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}
    ),
    "ico": lambda s: post_files(s, ico_holding(png())),
    "rle_bmp": lambda s: post_files(s, rle8_bmp()),
    "json_with_many_keys": lambda s: post_json(s, {f"key{i}": 1 for i in range(1000)}),
}

EXPECTED = {
    "not_an_image": (400, "not_an_image"),
    "truncated_png": (400, "truncated"),
    "truncated_jpeg": (400, "truncated"),
    "zero_bytes": (400, "empty"),
    "decompression_bomb": (400, "too_many_pixels"),
    "too_many_images": (400, "too_many_images"),
    "too_many_base64_images": (400, "too_many_images"),
    "body_too_large": (413, "body_too_large"),
    "chunked_body_too_large": (413, "body_too_large"),
    "malformed_json": (400, "malformed_json"),
    "json_not_an_object": (400, "malformed_json"),
    "malformed_base64": (400, "malformed_base64"),
    "base64_of_a_non_image": (400, "not_an_image"),
    "no_images": (400, "missing_field"),
    "wrong_json_field": (400, "unknown_field"),
    "wrong_form_field": (400, "unknown_field"),
    "text_instead_of_file": (400, "not_a_file"),
    "json_to_the_files_route": (400, "unsupported_media_type"),
    "zero_top_k": (400, "invalid_value"),
    "text_top_k": (400, "invalid_value"),
    "no_multipart_boundary": (400, "malformed_multipart"),
    "ico": (400, "unsupported_format"),
    "rle_bmp": (400, "unsupported_format"),
    "json_with_many_keys": (400, "json_too_complex"),
}
