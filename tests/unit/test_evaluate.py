"""Metrics, temperature scaling and the report files."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from training.evaluate import calibration, evaluate_logits, fit_temperature, write_report

NAMES = ["a", "b", "c", "d"]


def noisy_logits(n: int = 600, accuracy: float = 0.7, scale: float = 1.0, seed: int = 0):
    """Logits whose argmax is right ``accuracy`` of the time; ``scale`` sets the confidence."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(NAMES), (n,), generator=generator)
    logits = torch.randn(n, len(NAMES), generator=generator)
    right = torch.rand(n, generator=generator) < accuracy
    logits[right, labels[right]] += 3.0
    return logits * scale, labels


def nll(logits, labels, temperature=1.0) -> float:
    return float(F.cross_entropy(logits / temperature, labels))


def test_temperature_cools_an_over_confident_model():
    logits, labels = noisy_logits(scale=8.0)
    temperature = fit_temperature(logits, labels)
    assert temperature > 2.0
    assert nll(logits, labels, temperature) < 0.5 * nll(logits, labels)

    before = evaluate_logits(logits, labels, NAMES)
    after = evaluate_logits(logits, labels, NAMES, temperature)
    assert after.metrics.accuracy == before.metrics.accuracy
    assert after.metrics.macro_f1 == before.metrics.macro_f1
    assert after.confusion == before.confusion
    assert after.metrics.nll < before.metrics.nll
    assert after.metrics.ece < before.metrics.ece


def test_temperature_sharpens_an_under_confident_model():
    logits, labels = noisy_logits(scale=0.2)
    temperature = fit_temperature(logits, labels)
    assert temperature < 1.0
    assert nll(logits, labels, temperature) < nll(logits, labels)


def test_temperature_is_the_nll_minimum():
    logits, labels = noisy_logits(scale=5.0, seed=1)
    temperature = fit_temperature(logits, labels)
    best = nll(logits, labels, temperature)
    for factor in (0.9, 1.1):
        assert best <= nll(logits, labels, temperature * factor)


def test_fitting_does_not_touch_the_inputs():
    logits, labels = noisy_logits()
    copy = logits.clone()
    fit_temperature(logits, labels)
    assert torch.equal(logits, copy)


def test_metrics_on_known_predictions():
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    predicted = torch.tensor([0, 1, 1, 1, 2, 2])
    logits = F.one_hot(predicted, 4).float() * 10
    evaluation = evaluate_logits(logits, labels, NAMES)
    metrics = evaluation.metrics
    assert metrics.accuracy == pytest.approx(4 / 6)
    assert metrics.per_class_f1 == pytest.approx({"a": 2 / 3, "b": 0.8, "c": 2 / 3, "d": 0.0})
    assert metrics.macro_f1 == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 4)
    assert evaluation.precision["b"] == pytest.approx(2 / 3)
    assert evaluation.recall["a"] == pytest.approx(0.5)
    assert evaluation.confusion == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]]
    assert metrics.n == 6
    # confident (p ~ 1) and right 4 times in 6: ECE is the 1/3 gap
    assert metrics.ece == pytest.approx(1 / 3, abs=1e-3)


def test_report_files(tmp_path):
    logits, labels = noisy_logits(n=80)
    evaluation = evaluate_logits(logits, labels, NAMES)
    history = [
        {"epoch": 1, "train_loss": 1.2, "val_loss": 1.1, "val_accuracy": 0.5, "val_macro_f1": 0.4},
        {"epoch": 2, "train_loss": 0.8, "val_loss": 0.9, "val_accuracy": 0.6, "val_macro_f1": 0.5},
    ]
    summary = {"tag": "m:1", "backbone": "b", "validation": evaluation.as_dict(), "test": None}
    write_report(tmp_path / "run", summary, history, NAMES)

    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["validation"]["confusion_matrix"] == evaluation.confusion
    assert report["history"] == history
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "# m:1" in markdown and "| validation |" in markdown and "| 2 |" in markdown
    for plot in ("confusion_matrix.png", "learning_curves.png"):
        assert (tmp_path / "run" / plot).read_bytes().startswith(b"\x89PNG")


def test_report_draws_labels_in_any_script(tmp_path, recwarn):
    """CJK, Arabic, Devanagari, emoji, a dollar sign (no math) and a pipe (markdown table)."""
    labels = ["猫", "كلب", "हाथी", "🐟", r"$\nocommand$", "a|b"]
    logits, targets = noisy_logits(n=60)
    logits = torch.cat([logits, logits[:, :2]], dim=1)
    targets = targets % len(labels)
    evaluation = evaluate_logits(logits, targets, labels)
    summary = {"tag": "m:1", "validation": evaluation.as_dict(), "test": None}
    write_report(tmp_path, summary, [], labels)

    assert (tmp_path / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")
    missing = [str(w.message) for w in recwarn if "missing from font" in str(w.message)]
    assert missing == []  # the fonts `make` installs draw every label
    rows = (tmp_path / "report.md").read_text().split("## Per class")[1].splitlines()[4:]
    assert [row.split(" | ")[0] for row in rows[: len(labels)]] == [
        "| 猫", "| كلب", "| हाथी", "| 🐟", r"| $\nocommand$", r"| a\|b",
    ]  # fmt: skip


def test_calibration_before_and_after_temperature_in_the_report(tmp_path):
    logits, labels = noisy_logits(n=400, scale=4.0)  # over-confident
    temperature = fit_temperature(logits, labels)
    found = calibration(logits, labels, temperature)
    assert found["before"]["nll"] == pytest.approx(nll(logits, labels))
    assert found["after"]["nll"] == pytest.approx(nll(logits, labels, temperature))
    assert found["after"]["nll"] < found["before"]["nll"]
    assert found["after"]["ece"] < found["before"]["ece"]
    after = evaluate_logits(logits, labels, NAMES, temperature).metrics
    assert found["after"]["ece"] == pytest.approx(after.ece)

    evaluation = evaluate_logits(logits, labels, NAMES, temperature)
    summary = {
        "tag": "m:1",
        "temperature": temperature,
        "validation": evaluation.as_dict(),
        "test": None,
        "calibration": {"validation": found},
    }
    write_report(tmp_path, summary, [], NAMES)
    assert json.loads((tmp_path / "report.json").read_text())["calibration"]["validation"] == found
    markdown = (tmp_path / "report.md").read_text()
    assert f"## Calibration (temperature {temperature:.3f}" in markdown
    row = (
        f"| validation | {found['before']['ece']:.4f} | {found['after']['ece']:.4f} "
        f"| {found['before']['nll']:.4f} | {found['after']['nll']:.4f} |"
    )
    assert row in markdown
