"""`visiontune predict` against a fake service (httpx.MockTransport) and no service at all."""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest

from service.errors import error_body
from visiontune import client
from visiontune.cli import main
from visiontune.commands import predict as predict_command


def predict(*argv: str) -> int:
    return main(["predict", *argv])


def fake_service(request: httpx.Request) -> httpx.Response:
    """Answers with each file's stem as its label, refusing files whose name starts with 'bad'."""
    names = re.findall(rb'filename="([^"]+)"', request.content)
    refused = [i for i, name in enumerate(names) if name.startswith(b"bad")]
    if refused:
        detail = [{"type": "truncated", "loc": ["images", i], "msg": "cut short"} for i in refused]
        return httpx.Response(400, json=error_body("invalid_input", detail))
    top_k = int(re.search(rb'name="top_k"\r\n\r\n(\d+)', request.content).group(1))
    predictions = [
        {
            "label": name.decode().split(".")[0],
            "score": 0.9,
            "top_k": [{"label": name.decode().split(".")[0], "score": 0.9}] * top_k,
            "model": "m:1",
        }
        for name in names
    ]
    return httpx.Response(200, json=predictions)


@pytest.fixture
def fake_client():
    with httpx.Client(transport=httpx.MockTransport(fake_service), base_url="http://fake") as c:
        yield c


def test_collect_images_expands_folders_and_keeps_files(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/1.png", "a/deep/2.JPG", "a/notes.txt", "x.bin"):
        (tmp_path / name).write_bytes(b"x")
    found = client.collect_images(
        [str(tmp_path / "a"), str(tmp_path / "x.bin"), str(tmp_path / "a")]
    )
    assert found == [tmp_path / "a/1.png", tmp_path / "a/deep/2.JPG", tmp_path / "x.bin"]


def test_collect_images_refuses_missing_paths_and_empty_folders(tmp_path):
    with pytest.raises(client.ClientError, match="no such file or folder"):
        client.collect_images([str(tmp_path / "missing.png")])
    with pytest.raises(client.ClientError, match="no images found"):
        client.collect_images([str(tmp_path)])


def test_refused_files_are_reported_and_the_rest_resent(fake_client, tmp_path):
    paths = []
    for name in ("one.png", "bad1.png", "two.png", "bad2.png"):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(b"x")
    answers = client.classify(fake_client, paths, top_k=2)
    assert [a.get("label") for a in answers] == ["one", None, "two", None]
    assert answers[1]["error"] == "truncated: cut short"
    assert len(answers[0]["top_k"]) == 2


def test_unreadable_files_fail_alone(fake_client, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(b"x")
    answers = client.classify(fake_client, [tmp_path / "gone.png", good], top_k=1)
    assert answers[0]["error"].startswith("cannot read")
    assert answers[1]["label"] == "good"


def test_a_whole_request_failing_marks_its_files(tmp_path):
    def busy(request):
        return httpx.Response(503, json=error_body("overloaded", "the server is overloaded"))

    path = tmp_path / "a.png"
    path.write_bytes(b"x")
    with httpx.Client(transport=httpx.MockTransport(busy), base_url="http://fake") as fake:
        [answer] = client.classify(fake, [path], top_k=1)
    assert answer["error"] == "HTTP 503: overloaded: the server is overloaded"


def test_table_has_a_row_per_file():
    answers = [
        {
            "path": "a.png",
            "label": "cat",
            "score": 0.91,
            "top_k": [{"label": "cat", "score": 0.91}],
        },
        {"path": "long/name.png", "error": "truncated: cut short"},
    ]
    lines = predict_command.table(answers).splitlines()
    assert lines[0].split() == ["PATH", "LABEL", "SCORE", "TOP-K"]
    assert lines[1].split() == ["a.png", "cat", "0.910", "cat", "0.910"]
    assert lines[2].endswith("error: truncated: cut short")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_service_is_one_line_and_exit_2(tmp_path, capsys):
    image = tmp_path / "a.png"
    image.write_bytes(b"x")
    url = f"http://127.0.0.1:{closed_port()}"
    assert predict(str(image), "--url", url) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"visiontune: error: cannot reach the service at {url}")
    assert err.count("\n") == 1


def test_missing_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert predict(str(tmp_path / "nope.png")) == 2
    assert (
        capsys.readouterr().err
        == f"visiontune: error: no such file or folder: {tmp_path / 'nope.png'}\n"
    )


def test_json_output_and_exit_code(monkeypatch, tmp_path, capsys):
    for name in ("a.png", "bad.png"):
        (tmp_path / name).write_bytes(b"x")
    transport = httpx.MockTransport(
        lambda request: (
            httpx.Response(200)
            if request.url.path == "/readyz"
            else httpx.Response(404)
            if request.url.path == "/model"
            else fake_service(request)
        )
    )
    real_client = httpx.Client
    monkeypatch.setattr(
        client.httpx, "Client", lambda **kwargs: real_client(transport=transport, **kwargs)
    )
    assert predict(str(tmp_path), "--json", "--batch-size", "1") == 1
    answers = json.loads(capsys.readouterr().out)
    assert [a.get("label") for a in answers] == ["a", None]


class Flaky:
    """The fake service, after first failing ``failures`` requests with ``fail``."""

    def __init__(self, fail, failures: int = 1):
        self.fail, self.failures, self.requests = fail, failures, 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.requests <= self.failures:
            return self.fail(request)
        return fake_service(request)


def connection_lost(request):
    raise httpx.RemoteProtocolError("Server disconnected without sending a response.")


def server_full(request):
    body = error_body("server_full", "the server is full")
    return httpx.Response(503, headers={"Retry-After": "0"}, json=body)


@pytest.mark.parametrize("fail", [connection_lost, server_full])
def test_classify_sends_a_request_once_more_after_a_lost_connection_or_a_503(
    tmp_path, monkeypatch, fail
):
    monkeypatch.setattr(client, "RETRY_PAUSE_S", 0)
    image = tmp_path / "7.png"
    image.write_bytes(b"x")
    service = Flaky(fail)
    with httpx.Client(transport=httpx.MockTransport(service), base_url="http://fake") as c:
        assert client.classify(c, [image], top_k=1)[0]["label"] == "7"
    assert service.requests == 2


def test_classify_retries_only_once(tmp_path, monkeypatch):
    monkeypatch.setattr(client, "RETRY_PAUSE_S", 0)
    image = tmp_path / "7.png"
    image.write_bytes(b"x")
    lost, full = Flaky(connection_lost, failures=2), Flaky(server_full, failures=2)
    transport = httpx.MockTransport(lost)
    with (
        httpx.Client(transport=transport, base_url="http://fake") as c,
        pytest.raises(client.ClientError, match="disconnected"),
    ):
        client.classify(c, [image], top_k=1)
    with httpx.Client(transport=httpx.MockTransport(full), base_url="http://fake") as c:
        assert client.classify(c, [image], top_k=1)[0]["error"].startswith("HTTP 503")
    assert (lost.requests, full.requests) == (2, 2)


def sized(folder, sizes: list[int]) -> list:
    paths = []
    for i, size in enumerate(sizes):
        paths.append(folder / f"{i}.png")
        paths[-1].write_bytes(b"x" * size)
    return paths


def test_pack_splits_by_image_count_and_body_size(tmp_path):
    paths = sized(tmp_path, [10] * 5)
    assert client.pack(paths, max_images=2, max_body_bytes=10**6) == [
        paths[:2],
        paths[2:4],
        [paths[4]],
    ]
    big = sized(tmp_path, [3000, 3000, 9000, 10])
    part = client.PART_OVERHEAD_BYTES
    assert client.pack(big, max_images=10, max_body_bytes=2 * (3000 + part)) == [
        big[:2],
        [big[2]],  # too large for any request: alone, for the service to name
        [big[3]],
    ]


def test_request_limits_come_from_the_model_description():
    serving = {"max_images": 8, "max_body_bytes": 1024, "max_batch_size": 4}
    described = httpx.MockTransport(lambda request: httpx.Response(200, json={"serving": serving}))
    with httpx.Client(transport=described, base_url="http://fake") as c:
        assert client.request_limits(c) == client.RequestLimits(8, 1024, 4)
    assert client.RequestLimits(64, 1024, 32).files_per_request(concurrency=4) == 8
    assert client.RequestLimits(4, 1024, 32).files_per_request(concurrency=1) == 4
    assert client.RequestLimits(64, 1024, 2).files_per_request(concurrency=4) == 1
    silent = httpx.MockTransport(lambda request: httpx.Response(404))
    with httpx.Client(transport=silent, base_url="http://fake") as c:
        assert client.request_limits(c) == client.RequestLimits()


def test_api_token_from_a_flag_a_file_or_the_environment(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("  from-file\n")
    env = {"VISIONTUNE_API_TOKEN": "from-env", "VISIONTUNE_API_TOKEN_FILE": str(token_file)}
    assert client.api_token("given", env=env) == "given"  # a flag wins over the environment
    assert client.api_token(token_file=token_file, env={}) == "from-file"
    assert client.api_token(env=env) == "from-env"  # as the service: the token before its file
    assert client.api_token(env={"VISIONTUNE_API_TOKEN_FILE": str(token_file)}) == "from-file"
    assert client.api_token(env={}) is None


def test_api_token_refuses_what_cannot_be_sent(tmp_path):
    with pytest.raises(client.ClientError, match="not both"):
        client.api_token("a", "b", env={})
    with pytest.raises(client.ClientError, match="--token / VISIONTUNE_API_TOKEN is empty"):
        client.api_token("  ", env={})
    with pytest.raises(client.ClientError, match="missing: No such file"):
        client.api_token(token_file=tmp_path / "missing", env={})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(client.ClientError, match="empty is empty"):
        client.api_token(env={"VISIONTUNE_API_TOKEN_FILE": str(tmp_path / "empty")})
