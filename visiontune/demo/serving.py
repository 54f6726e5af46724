"""The demo's last step: serve a stored model with BentoML, classify held-out images over HTTP."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import bentoml
import httpx
from PIL import Image

from visiontune.client import wait_until_ready
from visiontune.lifecycle.release import free_port

REPO = Path(__file__).resolve().parents[2]


def folder_name(label: str) -> str:
    """A label as one folder name (``T-shirt/top`` becomes ``T-shirt-top``)."""
    return re.sub(r"[/\\\0]+", "-", label).strip(". ") or "_"


def write_held_out(examples: list[tuple[Image.Image, str]], folder: Path) -> list[Path]:
    """``folder/LABEL/N.png`` per image (what was there before is removed), kept for the
    README's next commands."""
    shutil.rmtree(folder, ignore_errors=True)
    paths = []
    for i, (image, label) in enumerate(examples):
        path = folder / folder_name(label) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
        paths.append(path)
    return paths


def serve_and_classify(tag: bentoml.Tag, examples: list[tuple[Image.Image, str]], folder: Path):
    """Serve ``tag`` with ``bentoml serve service:ImageClassifier`` and post the held-out
    images (written to ``folder``) to ``/classify``; prints each answer and the count right."""
    paths = write_held_out(examples, folder)
    files = [("images", (p.name, p.read_bytes(), "image/png")) for p in paths]
    port = free_port()
    command = ["bentoml", "serve", "service:ImageClassifier", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    print(f"      serving {tag}: {' '.join(command)}", flush=True)
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / command[0]), *command[1:]],
        cwd=REPO,
        env={**os.environ, "VISIONTUNE_MODEL": str(tag)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, server=server)
        response = httpx.post(f"{url}/classify", files=files, timeout=60)
        response.raise_for_status()
        print(f"      POST {url}/classify with {len(files)} held-out images:")
        right = 0
        for (_, truth), answer in zip(examples, response.json(), strict=True):
            right += answer["label"] == truth
            print(
                f"      true {truth:<12} predicted {answer['label']:<12} score {answer['score']:.3f}"
            )
        print(f"      {right}/{len(examples)} right over HTTP")
    finally:
        server.terminate()
        server.wait(timeout=30)
