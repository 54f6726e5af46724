"""`visiontune predict` against the real server."""

from __future__ import annotations

import json
import shutil

from tests.support.servers import API_TOKEN
from visiontune.cli import main


def run(*argv: str) -> int:
    return main(["predict", *argv])


def test_predict_a_folder_as_json(server, digit_files, tmp_path, capsys):
    folder = tmp_path / "mixed"
    for label in ("2", "7"):
        (folder / label).mkdir(parents=True)
        for path in digit_files[label][40:45]:
            shutil.copy(path, folder / label / path.name)
    (folder / "7" / "broken.png").write_bytes(digit_files["7"][0].read_bytes()[:30])

    code = run(str(folder), "--url", server.url, "--json", "--batch-size", "4", "--top-k", "2")

    answers = json.loads(capsys.readouterr().out)
    assert code == 1  # one file failed
    assert len(answers) == 11
    broken = [a for a in answers if a["path"].endswith("broken.png")]
    assert broken[0]["error"].startswith(("truncated", "not_an_image"))
    classified = [a for a in answers if "error" not in a]
    assert len(classified) == 10
    right = sum(a["label"] == a["path"].split("/")[-2] for a in classified)
    assert right >= 8
    assert all(len(a["top_k"]) == 2 for a in classified)


def test_predict_files_as_a_table(server, digit_files, capsys):
    paths = [str(digit_files[label][50]) for label in ("0", "1")]
    assert run(*paths, "--url", server.url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["PATH", "LABEL", "SCORE"]
    assert [line.split()[0] for line in lines[1:]] == paths


def test_predict_packs_a_folder_into_requests_within_the_service_limit(
    server, digit_files, tmp_path, capsys
):
    folder = tmp_path / "many"
    folder.mkdir()
    for path in digit_files["4"][:20]:
        shutil.copy(path, folder / path.name)
    # the server takes 8 images a request (LIMITS); 50 asked for is cut to 8, not refused
    assert run(str(folder), "--url", server.url, "--json", "--batch-size", "50") == 0
    answers = json.loads(capsys.readouterr().out)
    assert len(answers) == 20 and all("error" not in a for a in answers)
    assert server.client.get("/model").json()["serving"]["max_images"] == 8


def test_predict_sends_the_token_of_a_flag_a_file_or_the_environment(
    guarded_server, digit_files, tmp_path, monkeypatch, capsys
):
    image = str(digit_files["3"][0])
    token_file = tmp_path / "token"
    token_file.write_text(API_TOKEN + "\n")
    url = ("--url", guarded_server.url)
    assert run(image, *url, "--token", API_TOKEN) == 0
    assert run(image, *url, "--token-file", str(token_file)) == 0
    monkeypatch.setenv("VISIONTUNE_API_TOKEN_FILE", str(token_file))
    capsys.readouterr()
    assert run(image, *url, "--json") == 0
    [answer] = json.loads(capsys.readouterr().out)
    assert answer["path"] == image and "error" not in answer
    monkeypatch.delenv("VISIONTUNE_API_TOKEN_FILE")
    monkeypatch.setenv("VISIONTUNE_API_TOKEN", API_TOKEN)
    assert run(image, *url) == 0


def test_predict_without_the_token_stops_with_one_line(guarded_server, digit_files, capsys):
    image = str(digit_files["3"][0])
    capsys.readouterr()
    assert run(image, "--url", guarded_server.url) == 2
    missing = capsys.readouterr().err.strip().splitlines()
    assert len(missing) == 1 and "needs a bearer token (HTTP 401)" in missing[0]
    assert "--token" in missing[0]
    assert run(image, "--url", guarded_server.url, "--token", "wrong") == 2
    wrong = capsys.readouterr().err.strip().splitlines()
    assert len(wrong) == 1 and "refused the token (HTTP 401)" in wrong[0]


def test_the_python_client_sends_the_token(guarded_server, digit_files):
    from visiontune.client import classify, connect, request_limits

    with connect(guarded_server.url, API_TOKEN) as client:
        assert request_limits(client).max_images == 64  # /model answered: the service's own
        [answer] = classify(client, [digit_files["8"][0]], top_k=2)
    assert "error" not in answer and len(answer["top_k"]) == 2
