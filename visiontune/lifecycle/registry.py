"""Changing stages: promote a version to production, roll production back.

Every change runs under an exclusive ``fcntl`` lock on the name's lock file, reads
the registry (``contract.stages``), changes it in memory, and writes it to a
temporary file that ``os.replace`` moves over the old one. A crash or Ctrl-C at
any point before the replace leaves the old registry; after it, the new one:
never two production models, never none where there was one.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import bentoml

from contract.savedmodel import Stage, production_ref
from contract.stages import (
    STAGES_FILENAME,
    Change,
    StageError,
    StageRecord,
    name_folder,
    read_record,
    resolve,
)

LOCK_FILENAME = "visiontune-stages.lock"


class RegistryError(StageError):
    """A stage change that can't be made; nothing was changed."""


@contextmanager
def changing(name: str) -> Iterator[StageRecord]:
    """The registry of ``name`` to change in place; written atomically if the block succeeds."""
    folder = name_folder(name)
    with open(folder / LOCK_FILENAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = folder / STAGES_FILENAME
        record = (
            StageRecord.model_validate_json(path.read_text())
            if path.exists()
            else StageRecord(name=name)
        )
        yield record
        _write(path, record)


def _write(path, record: StageRecord) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "w") as file:
            file.write(record.model_dump_json(indent=2))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def promote(
    ref: str,
    reason: str,
    *,
    gate: dict[str, Any] | None = None,
    expected_production: str | None = None,
) -> Change:
    """Make the version ``ref`` names production; the current production one is archived.

    ``expected_production`` (a version) guards a gate's verdict: if production
    changed since the gate compared against it, nothing changes.
    """
    tag = resolve(ref)
    version, parent = str(tag.version), _parent(tag)
    with changing(tag.name) as record:
        if record.production == version:
            raise RegistryError(f"{tag} is already production")
        if expected_production is not None and record.production != expected_production:
            raise RegistryError(
                f"the gate compared {tag} with {tag.name}:{expected_production}, but production "
                f"is {tag.name}:{record.production}; compare it with {production_ref(tag.name)}"
            )
        change = Change(
            when=_now(),
            version=version,
            from_stage=record.stage(version),
            to_stage=Stage.production,
            reason=reason,
            previous_production=record.production,
            parent=parent,
            gate=gate,
        )
        _archive_production(record, reason, keep_for_rollback=True)
        _crown(record, change)
    return change


def rollback(name: str, reason: str = "rollback", *, expected_target: str | None = None) -> Change:
    """Make the previous production version production again; the current one is archived.

    To roll out first and record after (``visiontune deploy``): take
    :func:`rollback_target`, deploy it, then call this with ``expected_target`` set to
    its version, so a registry changed meanwhile is refused rather than overwritten.
    """
    with changing(name) as record:
        if record.production is None:
            raise RegistryError(
                f"{name} has no production model; promote one: visiontune promote {name}:VERSION"
            )
        target = _rollback_target(record)
        if expected_target is not None and target != expected_target:
            raise RegistryError(
                f"{name} would roll back to {name}:{target}, not {name}:{expected_target}: "
                "the stages changed meanwhile; run the rollback again"
            )
        change = Change(
            when=_now(),
            version=target,
            from_stage=record.stage(target),
            to_stage=Stage.production,
            reason=reason,
            previous_production=record.production,
        )
        _archive_production(record, reason, keep_for_rollback=False)
        _crown(record, change)
    return change


def rollback_target(name: str) -> bentoml.Tag:
    """The tag :func:`rollback` would make production (for a dry run or a redeploy plan)."""
    return bentoml.Tag(name, _rollback_target(read_record(name)))


def _rollback_target(record: StageRecord) -> str:
    while record.rollback_to:
        version = record.rollback_to[-1]
        if _stored(bentoml.Tag(record.name, version)):
            return version
        record.rollback_to.pop()  # deleted from the store since: skip it
    raise RegistryError(f"{record.name} has no earlier production model to roll back to")


def _archive_production(record: StageRecord, reason: str, *, keep_for_rollback: bool) -> None:
    current = record.production
    if current is None:
        return
    if keep_for_rollback:
        record.rollback_to.append(current)
    record.stages[current] = Stage.archived
    record.history.append(
        Change(
            when=_now(),
            version=current,
            from_stage=Stage.production,
            to_stage=Stage.archived,
            reason=reason,
        )
    )


def _crown(record: StageRecord, change: Change) -> None:
    if change.version in record.rollback_to:
        record.rollback_to.remove(change.version)
    record.stages[change.version] = Stage.production
    record.production = change.version
    record.history.append(change)


def _parent(tag: bentoml.Tag) -> str | None:
    lineage = bentoml.models.get(tag).info.metadata.get("lineage") or {}
    return lineage.get("parent")


def _stored(tag: bentoml.Tag) -> bool:
    try:
        bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        return False
    return True


def _now() -> datetime:
    return datetime.now(UTC)
