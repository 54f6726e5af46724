"""`visiontune train`, `models` and `evaluate` as a user runs them, on a folder with bad files."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import bentoml
import pytest
import torch

from contract.savedmodel import ModelMetadata
from tests.support.builders import IMAGE_SIZE, unique_name
from tests.support.cli import assert_one_line_error, visiontune
from tests.support.images import BAD_FILES, add_bad_files, write_classes
from training.config import TrainConfig
from training.data import ImageSet, load_data, make_loader
from training.evaluate import collect_logits, evaluate_logits, fit_temperature
from training.store import load_predictor

pytestmark = pytest.mark.slow


@dataclass
class Run:
    result: subprocess.CompletedProcess
    data: Path
    run_dir: Path
    name: str
    backbone: Path

    @property
    def tag(self) -> str:
        return self.result.stdout.split("saved ", 1)[1].split()[0]

    @property
    def model(self) -> bentoml.Model:
        return bentoml.models.get(self.tag)

    @property
    def metadata(self) -> ModelMetadata:
        return ModelMetadata.model_validate(self.model.info.metadata)


@pytest.fixture(scope="module")
def run(tmp_path_factory, make_backbone) -> Run:
    root = tmp_path_factory.mktemp("cli-run")
    data = write_classes(root / "data", {"1": 25, "2": 25, "7": 25})
    add_bad_files(data / "7")
    backbone = make_backbone("resnet", IMAGE_SIZE)
    name = unique_name("cli")
    result = visiontune(
        "train",
        "--data", data,
        "--backbone", backbone,
        "--strategy", "full",
        "--image-size", IMAGE_SIZE,
        "--epochs", 3,
        "--batch-size", 16,
        "--lr", "1e-2",
        # three epochs on 25 images a class: without augmentation they fit, so the
        # scores are confident enough for the calibration tests below
        "--augment", "none",
        "--name", name,
        "--output-dir", root / "run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return Run(result, data, root / "run", name, backbone)


def test_train_prints_the_tag_and_epoch_lines(run):
    assert run.tag.startswith(f"{run.name}:")
    epochs = [line for line in run.result.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert "Traceback" not in run.result.stderr


def test_bad_files_are_warned_about_by_path_and_counted(run):
    for name in BAD_FILES:
        assert f"skipping {run.data / '7' / name}" in run.result.stderr
    report = json.loads((run.run_dir / "report.json").read_text())
    assert report["skipped"] == len(BAD_FILES)
    config = json.loads((run.run_dir / "config.json").read_text())
    skipped = config["skipped_files"]
    assert len(skipped) == len(BAD_FILES)
    assert all(str(run.data / "7") in entry for entry in skipped)
    assert run.metadata.training_config["skipped_files"] == skipped


def test_run_dir_has_the_report(run):
    files = {p.name for p in run.run_dir.iterdir()}
    assert {
        "report.json",
        "report.md",
        "confusion_matrix.png",
        "learning_curves.png",
        "config.json",
    } <= files
    assert "checkpoint" not in files  # a finished run leaves no checkpoint behind
    report = json.loads((run.run_dir / "report.json").read_text())
    assert report["tag"] == run.tag
    assert [row["epoch"] for row in report["history"]] == [1, 2, 3]
    assert report["test"]["n"] == run.metadata.split["test"]
    markdown = (run.run_dir / "report.md").read_text()
    assert run.tag in markdown and "| test |" in markdown
    for plot in ("confusion_matrix.png", "learning_curves.png"):
        assert (run.run_dir / plot).read_bytes().startswith(b"\x89PNG")
    assert_mistakes_reported(report["test"], run.run_dir, run.data)
    config = json.loads((run.run_dir / "config.json").read_text())
    assert config["strategy"] == "full"
    assert config["epochs"] == 3


def assert_mistakes_reported(split: dict, report_dir: Path, data: Path) -> None:
    """The most confused pairs add up to the confusion matrix's errors; each worst mistake is
    a wrongly predicted file of ``data``, and the grid is drawn when there is one."""
    confusion = split["confusion_matrix"]
    wrong = sum(n for t, row in enumerate(confusion) for p, n in enumerate(row) if t != p)
    assert sum(pair["count"] for pair in split["most_confused"]) == wrong
    assert len(split["worst_mistakes"]) == min(16, wrong)
    for mistake in split["worst_mistakes"]:
        image = Path(mistake["image"])
        assert image.parent.parent == data and image.parent.name == mistake["true"]
        assert mistake["predicted"] != mistake["true"]
    assert (report_dir / "worst_mistakes.png").exists() == bool(wrong)
    assert "## Most confused" in (report_dir / "report.md").read_text()


def test_stored_model_carries_the_contract(run):
    metadata = run.metadata
    model = run.model
    assert model.info.labels["backbone_family"] == "resnet"
    assert metadata.labels == ["1", "2", "7"]
    assert metadata.backbone == str(run.backbone)
    assert metadata.strategy == "full"
    assert metadata.image_size == (IMAGE_SIZE, IMAGE_SIZE)
    assert metadata.temperature > 0
    assert metadata.test is not None and metadata.test.n == metadata.split["test"]
    assert sum(metadata.split.values()) == 75
    assert sum(metadata.label_counts.values()) == metadata.split["train"]
    assert all(16 <= n <= 19 for n in metadata.label_counts.values())  # stratified 70% of 25
    expected = load_data(TrainConfig(data=str(run.data), backbone="b")).fingerprint
    assert metadata.dataset_fingerprint == expected
    assert {"torch", "transformers", "bentoml", "peft", "accelerate"} <= set(metadata.versions)
    assert metadata.validation.accuracy > 0.5  # it learnt something
    files = {p.name for p in Path(model.path).iterdir()}
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    saved_config = json.loads((Path(model.path) / "config.json").read_text())
    assert saved_config["id2label"] == {"0": "1", "1": "2", "2": "7"}


def test_models_lists_it_with_stage_and_metrics(run):
    result = visiontune("models", run.name)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.split()[:4] == ["TAG", "STAGE", "BACKBONE", "STRATEGY"]
    assert len(rows) == 1
    row = rows[0].split()
    metadata = run.metadata
    assert row[:4] == [run.tag, "candidate", str(run.backbone), "full"]
    assert row[4] == f"{metadata.validation.accuracy:.4f}"
    assert row[5] == f"{metadata.validation.macro_f1:.4f}"
    assert row[6] == f"{metadata.test.accuracy:.4f}"


def test_evaluate_writes_a_report(run, tmp_path):
    result = visiontune("evaluate", run.tag, "--data", run.data, "--output-dir", tmp_path / "eval")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{run.tag}: 75 images" in result.stdout
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["test"]["n"] == 75
    assert sum(map(sum, report["test"]["confusion_matrix"])) == 75
    assert (tmp_path / "eval" / "report.md").exists()
    assert (tmp_path / "eval" / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")
    assert_mistakes_reported(report["test"], tmp_path / "eval", run.data)


def test_evaluate_on_labels_the_model_does_not_know(run, tmp_path):
    write_classes(tmp_path / "other", {"1": 3, "9": 3})
    result = visiontune("evaluate", run.tag, "--data", tmp_path / "other")
    assert_one_line_error(result, "label(s) 9 unknown to the model")


def validation_logits(run: Run):
    predictor, metadata, _ = load_predictor(run.tag)
    model, preprocessing = predictor.model, predictor.preprocessing
    config = TrainConfig.model_validate(
        {k: v for k, v in metadata.training_config.items() if k in TrainConfig.model_fields}
    )
    data = load_data(config)
    loader = make_loader(ImageSet(data.val, preprocessing), 32)
    return model, preprocessing, metadata, loader


def test_stored_temperature_gives_the_stored_validation_metrics(run):
    model, preprocessing, metadata, loader = validation_logits(run)
    logits, labels = collect_logits(model, loader, preprocessing)
    assert len(labels) == metadata.validation.n
    evaluation = evaluate_logits(logits, labels, metadata.labels, metadata.temperature)
    assert evaluation.metrics.accuracy == pytest.approx(metadata.validation.accuracy)
    assert evaluation.metrics.nll == pytest.approx(metadata.validation.nll, rel=1e-4)
    assert fit_temperature(logits, labels) == pytest.approx(metadata.temperature, rel=1e-3)


def test_calibration_cools_an_over_confident_model(run):
    model, preprocessing, metadata, loader = validation_logits(run)
    with torch.no_grad():
        for param in model.classifier.parameters():
            param.mul_(25.0)  # the same predictions, far too sure of them
    logits, labels = collect_logits(model, loader, preprocessing)
    temperature = fit_temperature(logits, labels)
    raw = evaluate_logits(logits, labels, metadata.labels)
    calibrated = evaluate_logits(logits, labels, metadata.labels, temperature)
    assert temperature > 5.0
    assert calibrated.metrics.nll < raw.metrics.nll
    assert calibrated.metrics.accuracy == raw.metrics.accuracy
    assert calibrated.metrics.accuracy == pytest.approx(metadata.validation.accuracy)
