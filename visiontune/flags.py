"""Command-line flags generated from pydantic fields: help from the description,
validation by pydantic, so a config's rules live in one place."""

from __future__ import annotations

import argparse
import json
import types
import typing

from pydantic_core import PydanticUndefined


def add_config_flags(parser: argparse.ArgumentParser, model: type, skip: tuple = ()) -> None:
    """One flag per field of ``model`` (except ``skip``)."""
    for name, field in model.model_fields.items():
        if name not in skip:
            add_field_flag(parser, name, field)


def add_field_flag(parser: argparse.ArgumentParser, name: str, field) -> None:
    flag = "--" + name.replace("_", "-")
    help_text = field.description or ""
    if field.annotation is bool:
        parser.add_argument(flag, dest=name, action="store_true", default=None, help=help_text)
        return
    if _is_list(field.annotation):
        parser.add_argument(flag, dest=name, action="append", default=None, help=help_text)
        return
    choices = _choices(field.annotation)
    if not field.is_required() and field.default not in (None, PydanticUndefined):
        help_text += f" (default: {getattr(field.default, 'value', field.default)})"
    parser.add_argument(flag, dest=name, choices=choices, default=None, help=help_text)


def config_values(args: argparse.Namespace, model: type) -> dict:
    """The fields of ``model`` given on the command line (lists: see :func:`list_value`)."""
    values = {}
    for name, field in model.model_fields.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if _is_list(field.annotation):
            value = list_value("--" + name.replace("_", "-"), value)
        values[name] = value
    return values


def list_value(flag: str, given: str | list[str]) -> list[str]:
    """A list flag's items: a JSON list, or one comma-separated value, or one item per repeat.

    Repeating the flag is how an item that contains a comma is named:
    ``--classes "Smith, J." --classes Doe`` is two items, ``--classes a,b`` is two too.
    """
    given = [given] if isinstance(given, str) else given
    items = []
    for text in given:
        if text.lstrip().startswith("["):
            items += _json_list(flag, text)
        elif len(given) == 1:
            items += [item.strip() for item in text.split(",") if item.strip()]
        else:
            items.append(text)
    return items


def _json_list(flag: str, text: str) -> list[str]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag}: not a valid JSON list ({err.msg}, column {err.colno})") from None
    if not isinstance(items, list) or not all(isinstance(i, str | int) for i in items):
        raise ValueError(f'{flag}: a JSON list must hold strings, e.g. \'["a, b", "c"]\'')
    return [str(item) for item in items]


def _choices(annotation) -> list[str] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, str) and annotation is not str:
        return [member.value for member in annotation]  # a StrEnum
    return None


def _is_list(annotation) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return typing.get_origin(annotation) is list


def quiet_transformers() -> None:
    """transformers' own bars (loading/writing weights) are noise on stderr, not progress."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()  # "Writing model shards" comes from huggingface_hub's bars
