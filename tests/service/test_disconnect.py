"""A client that leaves mid-upload: a 499 line at INFO, never a 500 or a body taken as whole."""

from __future__ import annotations

import socket
import time

import pytest

from tests.support.servers import total


def leave_mid_upload(server, chunked: bool) -> None:
    """Send the head and half of a JSON body over a raw socket, then close it."""
    body = b'{"images": ["' + b"A" * 4000 + b'"]}'
    half = body[: len(body) // 2]
    length = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % len(body)
    head = b"POST /classify_json HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
    payload = b"%x\r\n%s\r\n" % (len(half), half) if chunked else half
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + length + b"\r\n\r\n" + payload)
        time.sleep(0.3)  # the server has started reading the body


def lines_with(server, text: str) -> list[str]:
    return [line for line in server.log.read_text().splitlines() if text in line]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_client_leaving_mid_upload_is_a_499_at_info(server, digit_files, chunked):
    before = len(lines_with(server, "(499)"))
    served = total(server.metrics(), "visiontune_predictions_total")

    leave_mid_upload(server, chunked)

    deadline = time.monotonic() + 10
    while len(lines_with(server, "(499)")) == before:
        assert time.monotonic() < deadline, server.tail()
        time.sleep(0.2)
    (line,) = lines_with(server, "(499)")[before:]
    assert "INFO" in line and "/classify_json" in line
    assert not lines_with(server, "ClientDisconnect") and not lines_with(server, "status=500")
    samples = server.metrics()
    assert not [
        key
        for key, value in samples["bentoml_service_request_total"].items()
        if ("http_response_code", "500") in key and value
    ]
    assert total(samples, "visiontune_predictions_total") == served, "a half body was classified"
    assert server.classify([digit_files["5"][0]]).status_code == 200
