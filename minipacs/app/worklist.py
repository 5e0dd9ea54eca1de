"""`minipacs worklist add|list|remove`: scheduled procedure steps in the index (PS3.4 Annex K).

Items come from DICOM JSON files (PS3.18 F: one object or a list of objects) or Part 10
files of one item (DCMTK's ``.wl``). Each is checked before anything is written: at least
Patient's Name or Patient ID, and a Scheduled Procedure Step Sequence whose every step has a
Modality and a valid Scheduled Procedure Step Start Date. Blocking calls, for the CLI; they
may run beside a serving process (the writes retry while the database is locked).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.valuerep import VR

from ..config import Config
from ..index import maintenance
from ..index.engine import make_engine
from ..index.models import normalize_date
from ..index.worklist import SqlWorklist, StepSummary
from . import OperationFailed, UsageError
from .ops import unmigrated_reason

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = [
    "Added",
    "StepSummary",
    "WorklistFailed",
    "WorklistUsageError",
    "add",
    "list_steps",
    "load_items",
    "remove",
]

MAX_FILE_BYTES: Final = 16 << 20  # a worklist file is small; refuse anything absurd
_JSON_STARTS: Final = (b"{", b"[")
_VRS: Final = frozenset(vr.value for vr in VR)  # PS3.5 Table 6.2-1


class WorklistUsageError(UsageError):
    """A file or argument refused as given (exit code 2)."""


class WorklistFailed(OperationFailed):
    """An operation that could not be done (exit code 1)."""


@dataclass(frozen=True, slots=True)
class Added:
    """The steps stored from one file, by their IDs (what `worklist list` shows)."""

    path: Path
    ids: tuple[int, ...]


# --- reading and checking files -----------------------------------------------------------


def load_items(path: Path) -> list[Dataset]:
    """The worklist items of one file, checked; raises WorklistUsageError naming the file."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise WorklistUsageError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB")
        data = path.read_bytes()
    except OSError as exc:
        raise WorklistUsageError(f"{path}: {exc.strerror or exc}") from None
    is_json = data.lstrip()[:1] in _JSON_STARTS
    items = _json_items(path, data) if is_json else [_part10_item(path)]
    if not items:
        raise WorklistUsageError(f"{path}: no worklist item")
    for number, item in enumerate(items, 1):
        where = f"{path}" if len(items) == 1 else f"{path} item {number}"
        _check(item, where)
    return items


def _json_items(path: Path, data: bytes) -> list[Dataset]:
    """PS3.18 F.2: a data set is one JSON object; a file may hold a list of them."""
    try:
        parsed: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WorklistUsageError(f"{path}: not valid JSON ({exc})") from None
    objects = parsed if isinstance(parsed, list) else [parsed]
    items = []
    for number, obj in enumerate(objects, 1):
        if not isinstance(obj, dict):
            raise WorklistUsageError(f"{path}: item {number} is not a JSON object")
        try:
            ds = Dataset.from_json(obj)
            _decode_all(ds)
            items.append(ds)
        except Exception as exc:  # pydicom's errors for a malformed DICOM JSON model
            raise WorklistUsageError(
                f"{path}: item {number} is not DICOM JSON ({_one_line(exc)})") from None
    return items


def _part10_item(path: Path) -> Dataset:
    try:
        ds = dcmread(path, force=True)
        ds.file_meta = None  # type: ignore[assignment]  # the item is the data set only
        _decode_all(ds)
    except Exception as exc:
        raise WorklistUsageError(f"{path}: not a DICOM file ({_one_line(exc)})") from None
    return ds


def _decode_all(ds: Dataset) -> None:
    """Convert every element now (pydicom converts lazily), so a bad one is refused here."""
    for element in ds:
        if element.VR not in _VRS:
            raise ValueError(f"{element.tag} has unknown VR {str(element.VR)[:8]!r}")
        if element.VR == "SQ":
            for nested in element.value:
                _decode_all(nested)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    return "" if value is None else str(value).strip()


def _check(item: Dataset, where: str) -> None:
    """The keys a modality cannot do without (PS3.4 Table K.6-1, our minimum)."""
    if not _text(item, "PatientName") and not _text(item, "PatientID"):
        raise WorklistUsageError(f"{where}: needs PatientName (0010,0010) or PatientID "
                                 "(0010,0020)")
    steps = item.get("ScheduledProcedureStepSequence")
    if not steps:
        raise WorklistUsageError(f"{where}: needs a ScheduledProcedureStepSequence (0040,0100) "
                                 "with at least one step")
    for number, step in enumerate(steps, 1):
        if not _text(step, "Modality"):
            raise WorklistUsageError(f"{where}: step {number} has no Modality (0008,0060)")
        date = _text(step, "ScheduledProcedureStepStartDate")
        if not date:
            raise WorklistUsageError(f"{where}: step {number} has no "
                                     "ScheduledProcedureStepStartDate (0040,0002)")
        if normalize_date(date) is None:
            raise WorklistUsageError(f"{where}: step {number} start date {date[:20]!r} "
                                     "is not a DICOM date (YYYYMMDD)")


# --- the operations -----------------------------------------------------------------------


@contextlib.contextmanager
def _worklist(config: Config) -> Iterator[SqlWorklist]:
    """The worklist of the configured index; refuses a database `db upgrade` has not made."""
    try:
        engine: Engine = make_engine(config.database.url)
    except Exception as exc:  # e.g. the URL's driver is not installed
        raise WorklistFailed(f"cannot open {config.database.url}: {exc}") from exc
    try:
        with _failures():
            if (reason := unmigrated_reason(config, engine)) is not None:
                raise WorklistFailed(reason)
            yield SqlWorklist(engine)
    finally:
        engine.dispose()


@contextlib.contextmanager
def _failures() -> Iterator[None]:
    """Database errors as one line (WorklistFailed)."""
    try:
        yield
    except (maintenance.IndexDatabaseError, OSError, sqlite3.Error) as exc:
        raise WorklistFailed(_one_line(getattr(exc, "orig", None) or exc)) from exc


def add(config: Config, paths: Sequence[Path]) -> list[Added]:
    """Check every file, then store all their items in one transaction (all or nothing)."""
    loaded = [(path, load_items(path)) for path in paths]
    with _worklist(config) as worklist, _failures():
        items = [item.to_json_dict() for _, file_items in loaded for item in file_items]
        ids = iter(worklist.add_items(items))
        return [Added(path, tuple(step for _ in file_items for step in next(ids)))
                for path, file_items in loaded]


def list_steps(config: Config) -> list[StepSummary]:
    with _worklist(config) as worklist, _failures():
        return worklist.list_steps()


def remove(config: Config, step_ids: Sequence[int]) -> int:
    """Remove steps by ID; an unknown ID removes nothing and raises WorklistFailed."""
    with _worklist(config) as worklist, _failures():
        missing = worklist.remove_steps(step_ids)
    if missing:
        listed = ", ".join(map(str, missing))
        raise WorklistFailed(f"no worklist step {listed} (nothing removed)")
    return len(set(step_ids))
