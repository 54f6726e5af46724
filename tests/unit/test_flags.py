"""List flags (--classes): comma-separated, repeated for items with commas, or a JSON list."""

from __future__ import annotations

import pytest

from training.config import TrainConfig
from visiontune.cli import build_parser
from visiontune.flags import config_values


def classes(*given: str) -> list[str]:
    argv = ["train", "--data", "digits", "--backbone", "b"]
    for value in given:
        argv += ["--classes", value]
    return TrainConfig.model_validate(
        config_values(build_parser().parse_args(argv), TrainConfig)
    ).classes


def test_one_value_is_comma_separated():
    assert classes("cat, dog,bird") == ["cat", "dog", "bird"]


def test_repeating_keeps_commas_in_labels():
    assert classes("Smith, J.", "Doe, A.") == ["Smith, J.", "Doe, A."]


def test_a_json_list_keeps_commas_too():
    assert classes('["Smith, J.", "Doe"]') == ["Smith, J.", "Doe"]


def test_bad_json_names_the_flag():
    with pytest.raises(ValueError, match="--classes: not a valid JSON list"):
        classes('["unclosed"')
