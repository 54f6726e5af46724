"""The promotion gate: its rules on known metrics, and real predictors scored on the same images."""

from __future__ import annotations

import json

import pytest

from contract.predictor import Predictor
from contract.savedmodel import Metrics
from tests.support.images import digit_images
from training.model import create_model
from visiontune.lifecycle.gate import (
    Contender,
    GateRules,
    Refused,
    check_labels,
    compare,
    judge,
    write_verdict,
)

LABELS = ["3", "5", "8"]


def metrics(macro_f1: float, **per_class: float) -> Metrics:
    f1 = {label: per_class.get(f"f{label}", macro_f1) for label in LABELS}
    return Metrics(accuracy=macro_f1, macro_f1=macro_f1, per_class_f1=f1, ece=0.1, nll=1.0, n=30)


def verdict(champion: Metrics, challenger: Metrics, **rules):
    return judge("m:champ", "m:chall", champion, challenger, "the test images", GateRules(**rules))


def test_a_better_challenger_passes():
    result = verdict(metrics(0.80), metrics(0.85))
    assert result.passed
    assert result.delta == pytest.approx(0.05)
    assert "macro_f1 +0.0500 vs the champion" in result.reason


def test_an_equal_challenger_passes_by_default_but_not_with_a_margin():
    assert verdict(metrics(0.8), metrics(0.8)).passed
    refused = verdict(metrics(0.8), metrics(0.8), min_delta=0.01)
    assert not refused.passed
    assert refused.reason == "macro_f1 +0.0000 vs the champion, below the required +0.0100"


def test_one_class_dropping_too_far_refuses_a_better_challenger():
    champion = metrics(0.80)
    challenger = metrics(0.85, f3=0.70, f5=0.95, f8=0.90)
    refused = verdict(champion, challenger)
    assert not refused.passed
    assert refused.reason == "F1 of class 3 drops by 0.1000, more than the allowed 0.0500"
    assert verdict(champion, challenger, max_class_drop=0.15).passed


def test_accuracy_can_be_the_main_metric():
    champion = metrics(0.8).model_copy(update={"accuracy": 0.9})
    assert not verdict(champion, metrics(0.85), metric="accuracy").passed
    assert verdict(champion, metrics(0.85)).passed


def test_other_labels_are_refused_with_the_difference_named():
    check_labels(["a", "b"], ["b", "a"])
    with pytest.raises(Refused, match="labels differ from the champion's: it adds c and lacks a"):
        check_labels(["a", "b"], ["b", "c"])


def test_the_verdict_is_written_as_json_and_markdown(tmp_path):
    result = verdict(metrics(0.80), metrics(0.85, f3=0.70))
    markdown = write_verdict(tmp_path / "run", result)
    saved = json.loads((tmp_path / "run" / "gate.json").read_text())
    assert saved["passed"] is False and saved["reason"] == result.reason
    assert saved["class_drops"]["3"] == pytest.approx(0.1)
    text = markdown.read_text()
    assert text.startswith("# Gate: m:chall vs m:champ")
    assert f"**REFUSED**: {result.reason}." in text
    assert "| F1 3 | 0.8000 | 0.7000 | -0.1000 |" in text
    assert "Held-out images (30): the test images." in text


def test_compare_scores_both_models_on_the_same_images(make_backbone):
    backbone = str(make_backbone("resnet", 16))
    model, preprocessing = create_model(backbone, LABELS, image_size=16)
    reordered, _ = create_model(backbone, ["8", "3", "5"], image_size=16)
    reordered.load_state_dict(model.state_dict())
    order = [2, 0, 1]  # the same model with its head's rows in the order 8, 3, 5
    head, reordered_head = model.classifier[-1], reordered.classifier[-1]
    reordered_head.weight.data = head.weight.data[order].clone()
    reordered_head.bias.data = head.bias.data[order].clone()
    examples = [(image, LABELS.index(str(d))) for d in (3, 5, 8) for image in digit_images(d, 4)]
    champion = Contender("m:a", LABELS, Predictor(model.eval(), preprocessing, 1.0))
    challenger = Contender("m:b", ["8", "3", "5"], Predictor(reordered.eval(), preprocessing, 1.0))

    result = compare(champion, challenger, examples, "twelve digits", GateRules())

    champion_scores = result.champion_metrics.model_dump()
    challenger_scores = result.challenger_metrics.model_dump()
    # the same predictions; reordered logits may round their softmax differently in the last bits
    assert champion_scores.pop("per_class_f1") == challenger_scores.pop("per_class_f1")
    assert champion_scores == pytest.approx(challenger_scores, rel=1e-6)
    assert result.champion_metrics.n == 12
    assert result.passed and result.delta == 0
