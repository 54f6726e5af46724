"""The report's worst mistakes (fastai's plot_top_losses) and most confused pairs (most_confused)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tests.support.images import digit_images
from training.evaluate import evaluate_logits, write_report
from training.mistakes import Predictions, most_confused, worst_mistakes


def test_most_confused_pairs_largest_first():
    confusion = [
        [5, 1, 3],
        [4, 7, 0],
        [1, 3, 9],
    ]
    assert most_confused(confusion, ["a", "b", "c"]) == [
        ("b", "a", 4),
        ("a", "c", 3),
        ("c", "b", 3),  # a tie keeps label order: (a, c) before (c, b)
        ("a", "b", 1),
        ("c", "a", 1),
    ]
    assert most_confused(confusion, ["a", "b", "c"], min_count=3) == [
        ("b", "a", 4),
        ("a", "c", 3),
        ("c", "b", 3),
    ]
    assert most_confused([[3, 0], [0, 2]], ["a", "b"]) == []


def probabilities(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows)


def test_worst_mistakes_are_wrong_predictions_highest_loss_first():
    examples = [(f"img{i}.png", label) for i, label in enumerate([0, 1, 2, 0, 1])]
    probs = probabilities(
        [
            [0.2, 0.7, 0.1],  # wrong: p(true) 0.2
            [0.1, 0.8, 0.1],  # right
            [0.6, 0.35, 0.05],  # wrong: p(true) 0.05, the worst
            [0.4, 0.35, 0.25],  # right, if unsure: never a mistake
            [0.5, 0.1, 0.4],  # wrong: p(true) 0.1
        ]
    )
    mistakes = worst_mistakes(Predictions(examples, probs))
    assert [m.index for m in mistakes] == [2, 4, 0]
    worst = mistakes[0]
    assert (worst.source, worst.true, worst.predicted) == ("img2.png", 2, 0)
    assert worst.score == pytest.approx(0.6)
    assert worst.true_score == pytest.approx(0.05)
    assert worst.loss == pytest.approx(-math.log(0.05))
    assert [m.index for m in worst_mistakes(Predictions(examples, probs), k=2)] == [2, 4]


def test_predictions_are_calibrated_like_the_service():
    logits = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    predictions = Predictions.from_logits([("a", 0), ("b", 1)], logits, temperature=2.0)
    assert torch.allclose(predictions.probs, (logits / 2.0).softmax(dim=-1))
    with pytest.raises(ValueError, match="3 examples but 2 rows"):
        Predictions.from_logits([("a", 0)] * 3, logits, temperature=1.0)


def report_inputs(tmp_path, labels: list[str]):
    """Real digit images as files, each predicted as the next label with growing confidence."""
    examples, rows = [], []
    for i in range(12):
        label = i % len(labels)
        path = tmp_path / "images" / f"{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        digit_images(label, 1, start=i)[0].save(path)
        examples.append((path, label))
        predicted = label if i % 3 == 0 else (label + 1) % len(labels)
        rows.append(F.one_hot(torch.tensor(predicted), len(labels)).float() * (1.0 + i))
    logits = torch.stack(rows)
    targets = torch.tensor([label for _, label in examples])
    evaluation = evaluate_logits(logits, targets, labels)
    summary = {"tag": "m:1", "validation": evaluation.as_dict(), "test": None}
    return summary, Predictions.from_logits(examples, logits, temperature=1.0), examples


def test_report_grid_draws_labels_in_any_script(tmp_path, recwarn):
    labels = ["猫", "كلب", "हाथी", "🐟"]
    summary, predictions, examples = report_inputs(tmp_path, labels)
    write_report(tmp_path / "run", summary, [], labels, predictions)

    assert (tmp_path / "run" / "worst_mistakes.png").read_bytes().startswith(b"\x89PNG")
    missing = [str(w.message) for w in recwarn if "missing from font" in str(w.message)]
    assert missing == []  # the fonts `make` installs draw every label on the grid
    validation = json.loads((tmp_path / "run" / "report.json").read_text())["validation"]
    mistakes = validation["worst_mistakes"]
    assert len(mistakes) == 8  # every third image is right
    losses = [m["loss"] for m in mistakes]
    assert losses == sorted(losses, reverse=True)
    assert mistakes[0]["image"] == str(examples[11][0])  # the most confident mistake
    assert (mistakes[0]["true"], mistakes[0]["predicted"]) == ("🐟", "猫")
    assert validation["most_confused"][0] == {"true": "猫", "predicted": "كلب", "count": 2}
    assert sum(pair["count"] for pair in validation["most_confused"]) == 8

    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "![worst mistakes](worst_mistakes.png)" in markdown
    confused = markdown.split("## Most confused (validation)")[1].splitlines()
    assert confused[4] == "| 猫 | كلب | 2 |"
    assert f"| {examples[11][0]} | 🐟 | 猫 |" in markdown


def test_report_without_mistakes_or_images(tmp_path):
    labels = ["a", "b"]
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    evaluation = evaluate_logits(logits, torch.tensor([0, 1]), labels)
    summary = {"tag": "m:1", "validation": evaluation.as_dict(), "test": None}
    predictions = Predictions.from_logits([("x.png", 0), ("y.png", 1)], logits, 1.0)
    write_report(tmp_path, summary, [], labels, predictions)
    assert not (tmp_path / "worst_mistakes.png").exists()
    assert "No image was mistaken for another class." in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["validation"]["most_confused"] == []


def test_an_image_gone_since_evaluation_leaves_the_grid_whole(tmp_path):
    labels = ["a", "b"]
    summary, predictions, examples = report_inputs(tmp_path, labels)
    examples[11][0].unlink()
    write_report(tmp_path / "run", summary, [], labels, predictions)
    assert (tmp_path / "run" / "worst_mistakes.png").read_bytes().startswith(b"\x89PNG")
