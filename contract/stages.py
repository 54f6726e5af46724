"""Which stored version a model reference names, and the stage registry it reads.

A reference is ``NAME:VERSION``, ``NAME:latest`` or ``NAME`` (BentoML's own: the
newest version) or ``NAME@STAGE`` (``NAME@production``: the one version serving).
Stages live in one JSON file per model name, ``visiontune-stages.json``, in the
name's folder of the BentoML model store, beside the version folders (BentoML
lists only sub-folders there, so it never mistakes the file for a model). It
holds the production version, each version's stage (a version it doesn't list is
a ``candidate``: what ``visiontune train`` makes) and the history of changes.

This module only reads it, so the service can resolve ``NAME@STAGE`` without the
lifecycle code; ``visiontune.lifecycle.registry`` writes it, under a file lock
and by atomically replacing the file, so a reader sees the state before a change
or after it, never half of one.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import bentoml
from pydantic import BaseModel, Field

from contract.savedmodel import Stage

STAGES_FILENAME = "visiontune-stages.json"


class StageError(LookupError):
    """A reference that names no stored version; the message says what to do."""


class Change(BaseModel):
    """One stage change of one version, as the history records it."""

    when: datetime
    version: str
    from_stage: Stage
    to_stage: Stage
    reason: str
    previous_production: str | None = Field(
        None, description="The production version before this change."
    )
    parent: str | None = Field(None, description="Tag of the model this one was retrained from.")
    gate: dict[str, Any] | None = Field(None, description="The gate's verdict, when one ran.")


class StageRecord(BaseModel):
    """The content of ``visiontune-stages.json`` for one model name."""

    name: str
    production: str | None = Field(None, description="The version serving as production.")
    stages: dict[str, Stage] = Field(
        default_factory=dict, description="Stage by version; unlisted versions are candidates."
    )
    rollback_to: list[str] = Field(
        default_factory=list,
        description="Former production versions, most recent last: what rollback restores.",
    )
    history: list[Change] = Field(default_factory=list)

    def stage(self, version: str) -> Stage:
        return self.stages.get(version, Stage.candidate)

    def promoted_at(self, version: str) -> datetime | None:
        """When ``version`` last became production."""
        changes = [c for c in self.history if c.version == version and c.to_stage == "production"]
        return changes[-1].when if changes else None


def name_folder(name: str) -> Path:
    """The store folder holding the versions of ``name`` (and its stage registry).

    Found by listing (which writes nothing; ``NAME:latest`` may rewrite the
    ``latest`` file, and a container's bento is read-only)."""
    if not name:
        raise StageError("a model reference needs a name: NAME@STAGE or NAME:VERSION")
    try:
        versions = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:
        versions = []
    except ValueError as err:
        raise StageError(f"{name!r} is not a model name: {err}") from None
    if not versions:
        raise StageError(f"no model named {name} in the store (`visiontune models` lists them)")
    return Path(versions[0].path).parent


def read_record(name: str) -> StageRecord:
    """The stage registry of ``name``; empty (all candidates) before the first promotion."""
    path = name_folder(name) / STAGES_FILENAME
    if not path.exists():
        return StageRecord(name=name)
    return StageRecord.model_validate_json(path.read_text())


def resolve(ref: str) -> bentoml.Tag:
    """The exact tag ``ref`` names, or a one-line :class:`StageError` saying what to do."""
    if "@" in ref:
        name, _, stage = ref.partition("@")
        return _resolve_stage(name, stage)
    try:
        return bentoml.models.get(ref).tag
    except bentoml.exceptions.NotFound:
        raise StageError(f"no model {ref} in the store (`visiontune models` lists them)") from None
    except ValueError as err:
        raise StageError(f"{ref!r} is not a model reference: {err}") from None


def recorded_stage(tag: bentoml.Tag | str) -> Stage | None:
    """The stage this store records for a version; None where it records none for the name
    (nothing promoted yet, or a built bento, which packs models without the registry)."""
    tag = bentoml.Tag.from_taglike(tag)
    if not (name_folder(tag.name) / STAGES_FILENAME).exists():
        return None
    return read_record(tag.name).stage(str(tag.version))


def _resolve_stage(name: str, stage: str) -> bentoml.Tag:
    if stage not in Stage.__members__:
        known = ", ".join(Stage)
        raise StageError(f"unknown stage {stage!r} in {name}@{stage} (stages: {known})")
    record = read_record(name)
    version = _version_in_stage(record, Stage(stage))
    tag = bentoml.Tag(name, version)
    try:
        bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise StageError(
            f"{name}@{stage} is {tag}, which is no longer in the store; "
            f"promote another version: visiontune promote {name}:VERSION"
        ) from None
    return tag


def _version_in_stage(record: StageRecord, stage: Stage) -> str:
    name = record.name
    if stage == Stage.production:
        if record.production is None:
            raise StageError(
                f"{name} has no production model; promote one: visiontune promote {name}:VERSION"
            )
        return record.production
    if stage == Stage.archived:
        archived = [c.version for c in record.history if c.to_stage == Stage.archived]
        archived = [v for v in archived if record.stage(v) == Stage.archived]
        if not archived:
            raise StageError(f"{name} has no archived model")
        return archived[-1]
    newest_first = sorted(
        bentoml.models.list(name), key=lambda m: m.info.creation_time, reverse=True
    )
    for model in newest_first:
        if record.stage(str(model.tag.version)) == Stage.candidate:
            return str(model.tag.version)
    raise StageError(f"{name} has no candidate model (`visiontune train` makes one)")
