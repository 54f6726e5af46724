"""Command-line flags generated from pydantic fields: help from the description,
validation by pydantic, so a config's rules live in one place."""

from __future__ import annotations

import argparse
import types
import typing


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
    choices = _choices(field.annotation)
    if not field.is_required() and field.default is not None:
        help_text += f" (default: {getattr(field.default, 'value', field.default)})"
    parser.add_argument(flag, dest=name, choices=choices, default=None, help=help_text)


def config_values(args: argparse.Namespace, model: type) -> dict:
    """The fields of ``model`` given on the command line (lists are comma-separated)."""
    values = {}
    for name, field in model.model_fields.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if _is_list(field.annotation) and isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        values[name] = value
    return values


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
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
