"""The demo's last step: serve a stored model with BentoML, classify held-out images over HTTP."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import bentoml
from PIL import Image

from visiontune.localserver import SERVICE, serving


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


SHOWN = 8  # answers printed; every held-out image is classified
REQUEST_IMAGES = 32  # images per request, within the service's default VISIONTUNE_MAX_IMAGES


def serve_and_classify(tag: bentoml.Tag, examples: list[tuple[Image.Image, str]], folder: Path):
    """Serve ``tag`` with ``bentoml serve service:ImageClassifier`` and post every held-out
    image (written to ``folder``) to ``/classify``; prints the first answers, the accuracy
    served over HTTP (the held-out accuracy training reported, if serving decodes and
    preprocesses as training did), and how many labels the stored model gives alike when
    run in this process on the same files."""
    paths = write_held_out(examples, folder)
    log = folder.parent / "serve.log"
    print(f"      serving {tag}: bentoml serve {SERVICE} (log: {log})", flush=True)
    with serving({"VISIONTUNE_MODEL": str(tag)}, log) as server:
        answers = []
        for first in range(0, len(paths), REQUEST_IMAGES):
            batch = paths[first : first + REQUEST_IMAGES]
            files = [("images", (p.name, p.read_bytes(), "image/png")) for p in batch]
            response = server.client.post("/classify", files=files)
            response.raise_for_status()
            answers += response.json()
    print(f"      POST {server.url}/classify with {len(paths)} held-out images; the first {SHOWN}:")
    for (_, truth), answer in zip(examples[:SHOWN], answers, strict=False):
        print(f"      true {truth:<12} predicted {answer['label']:<12} score {answer['score']:.3f}")
    right = sum(
        answer["label"] == truth for (_, truth), answer in zip(examples, answers, strict=True)
    )
    print(
        f"      served accuracy on the {len(paths)} held-out images: {right / len(paths):.3f} "
        f"({right}/{len(paths)} right over HTTP)"
    )
    served = [answer["label"] for answer in answers]
    same = sum(a == b for a, b in zip(served, labels_in_process(tag, paths), strict=True))
    print(f"      the stored model run in this process gives {same}/{len(paths)} of these labels")


def labels_in_process(tag: bentoml.Tag, paths: list[Path]) -> list[str]:
    """The stored model's top-1 labels for ``paths``, run here as ``visiontune evaluate`` runs it."""
    from contract.images import load_image
    from training.store import load_predictor

    predictor, metadata, _ = load_predictor(tag)
    with_images = [load_image(Image.open(path)) for path in paths]
    return [metadata.labels[int(row.argmax())] for row in predictor.classify(with_images)]
