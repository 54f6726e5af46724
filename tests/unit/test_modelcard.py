"""The model card in the stored folder: what the model is, how good, and a loading
snippet that really runs with transformers alone."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import bentoml
from huggingface_hub import ModelCard

from contract.savedmodel import Metrics
from tests.support.builders import metadata
from tests.support.images import digit_images
from training.model import create_model
from training.store import save_model

LABELS = ("猫", "кошка", "قطة", "a|b")


def stored_card(make_backbone, **changes) -> tuple[Path, str]:
    model, preprocessing = create_model(str(make_backbone("dinov2", 16)), list(LABELS))
    tag = save_model(
        model, preprocessing, metadata(LABELS, **changes), name=f"card-{uuid.uuid4().hex[:8]}"
    )
    path = Path(bentoml.models.get(tag).path)
    return path, (path / "README.md").read_bytes().decode("utf-8")


def test_card_names_labels_data_metrics_and_calibration(make_backbone):
    test = Metrics(
        accuracy=0.75,
        macro_f1=0.7,
        per_class_f1={"猫": 0.9, "кошка": 0.8, "قطة": 0.6, "a|b": 0.5},
        ece=0.031,
        nll=0.7,
        n=40,
    )
    _, card = stored_card(make_backbone, test=test, temperature=1.25)

    for label in ("猫", "кошка", "قطة", "a\\|b"):  # a table cell escapes the pipe
        assert f"| {label} |" in card
    assert "fingerprint `abc`" in card
    assert "| test (held out) | 40 | 0.7500 | 0.7000 | 0.0310 | 0.7000 |" in card
    assert "| 猫 | 0.4000 | 0.9000 |" in card  # per-class F1: validation, test
    assert "T = 1.2500" in card and "0.0310" in card
    assert "shortest edge resized to" in card and "BitImageProcessor" in card
    assert "## Intended use and limitations" in card
    parsed = ModelCard(card)
    assert parsed.data.pipeline_tag == "image-classification"
    assert parsed.data.library_name == "transformers"


def test_card_snippet_loads_the_model_with_transformers_alone(make_backbone, tmp_path):
    path, card = stored_card(make_backbone)
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    image = tmp_path / "image.jpg"
    digit_images(3, 1)[0].convert("RGB").save(image)
    script = snippet.replace("PATH/TO/THIS/FOLDER", str(path)).replace("image.jpg", str(image))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    label, score = result.stdout.split()
    assert label in LABELS and 0 < float(score) <= 1
