"""The README and every page of docs/ show only what exists: `visiontune` sub-commands and
their flags, `make` targets, and `VISIONTUNE_*` variables the code reads; each page is
linked from the README, and the serving reference lists every serving setting."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from service.settings import Settings
from tests.support import REPO
from visiontune.cli import build_parser

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# where the variables a page names are read: the product, its scripts and builds
READERS = ["contract", "training", "service", "visiontune", "benchmarks", "deploy"]
# the program `visiontune` (a path may lead to it), not the namespace of `kubectl -n visiontune`
COMMAND = re.compile(r"(?:^|(?<!-n)\s|/)visiontune\s+([a-z][a-z-]*)(.*)")
MAKE = re.compile(r"(?:^|[\s;&(])make\s+([a-z][a-z0-9-]*)")
VARIABLE = re.compile(r"\bVISIONTUNE_[A-Z0-9_]*[A-Z0-9]\b")
SEPARATORS = re.compile(r"&&|\|\||;| \| | #|\)")


def code_of(doc: Path) -> list[str]:
    """The page's code: each line of its fenced blocks (continuations joined), and each
    inline code span of its prose."""
    text = doc.read_text()
    lines = []
    for i, part in enumerate(re.split(r"^```.*$", text, flags=re.M)):
        if i % 2:  # inside a fence
            lines += part.replace("\\\n", " ").splitlines()
        else:
            lines += re.findall(r"`([^`\n]+)`", part)
    return lines


def commands_in(doc: Path) -> list[tuple[str, list[str]]]:
    """(sub-command, flags) of every `visiontune` command the page shows."""
    found = []
    for line in code_of(doc):
        for match in COMMAND.finditer(line):
            rest = SEPARATORS.split(match.group(2))[0]
            flags = [
                flag.split("=")[0] for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest)
            ]
            found.append((match.group(1), flags))
    return found


def options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and of its own sub-commands (``backbone import``)."""
    found = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= options(sub)
    return found


def sub_commands() -> dict[str, set[str]]:
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: options(sub) for name, sub in commands.choices.items()}


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*)\s*:", text, flags=re.M))


def code_text() -> str:
    files = [REPO / "Makefile", *REPO.glob("bentofile*.yaml")]
    for folder in READERS:
        files += [p for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix != ".md"]
    return "\n".join(p.read_text(errors="ignore") for p in files)


def settings_variables() -> set[str]:
    return {field.alias for field in Settings.model_fields.values()}


@pytest.fixture(scope="module")
def known():
    return {
        "commands": sub_commands(),
        "targets": make_targets(),
        "code": code_text(),
        "settings": settings_variables(),
    }


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_visiontune_command_and_flag_shown_exists(doc, known):
    shown = commands_in(doc)
    for command, flags in shown:
        assert command in known["commands"], f"{doc.name}: visiontune {command}"
        unknown = [flag for flag in flags if flag not in known["commands"][command]]
        assert not unknown, f"{doc.name}: visiontune {command} has no {unknown}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_make_target_shown_exists(doc, known):
    for line in code_of(doc):
        for target in MAKE.findall(line):
            assert target in known["targets"], f"{doc.name}: make {target}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_variable_named_is_read_by_the_code(doc, known):
    for name in set(VARIABLE.findall(doc.read_text())):
        assert name in known["settings"] or name in known["code"], f"{doc.name}: {name}"


def test_every_page_of_docs_is_linked_from_the_readme():
    readme = (REPO / "README.md").read_text()
    for doc in DOCS[1:]:
        assert f"(docs/{doc.name})" in readme, doc.name


def test_the_serving_reference_lists_every_setting():
    reference = (REPO / "docs" / "serving.md").read_text()
    missing = [name for name in settings_variables() if f"`{name}`" not in reference]
    assert not missing, missing


def test_the_checks_see_what_the_pages_show():
    """The parsing above finds commands, flags and targets (a check that finds nothing
    passes whatever the pages say)."""
    shown = [command for doc in DOCS for command in commands_in(doc)]
    assert ("train", ["--data", "--backbone"]) in shown
    assert any(command == "score" and "--engine" in flags for command, flags in shown)
    targets = {target for doc in DOCS for line in code_of(doc) for target in MAKE.findall(line)}
    assert {"demo", "test", "image", "deploy-local"} <= targets
