"""The index schema: patient, study, series, instance (PS3.4 C.6.1.1 / C.6.2.1 keys).

Each level has its Query/Retrieve keys as typed, indexed columns (DESIGN principle 12): PN
also case-folded, dates and times as normalised DICOM strings so ranges are lexical
BETWEENs, integers as integers. Multi-valued keys live in child tables so any value can
match. Everything else of the level is DICOM JSON (PS3.18 F.2) text. Schema changes go
through Alembic revisions in ``migrations/versions/`` only.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..ports import QueryLevel

__all__ = [
    "KEYS",
    "MULTI_VALUED",
    "Base",
    "Instance",
    "KeyColumn",
    "KeyKind",
    "Level",
    "Patient",
    "PatientOtherId",
    "PatientValue",
    "Series",
    "SeriesValue",
    "Study",
    "StudyValue",
    "UnreferencedFile",
    "fold",
    "iter_json_strings",
    "key_values",
    "multi_values",
    "normalize_date",
    "normalize_time",
]

# Stable constraint names, so Alembic revisions name what they alter.
NAMING: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# The Query/Retrieve levels (PS3.4 C.6.1.1) are the ports' vocabulary.
Level = QueryLevel


class KeyKind(enum.Enum):
    """How a key's value is kept in its column."""

    TEXT = "text"
    PN = "pn"  # also folded into ``<column>_folded``
    DATE = "date"  # DA, YYYYMMDD
    TIME = "time"  # TM, HHMMSS.FFFFFF (always 13 characters)
    INT = "int"  # IS


@dataclass(frozen=True, slots=True)
class KeyColumn:
    """A Query/Retrieve key kept as a typed column of its level's table."""

    tag: int
    column: str
    kind: KeyKind


_T, _PN, _DA, _TM, _INT = KeyKind.TEXT, KeyKind.PN, KeyKind.DATE, KeyKind.TIME, KeyKind.INT

# Single-valued keys as columns: PS3.4 C.6.1.1.2-C.6.1.1.5 required/unique keys and the
# optional ones modalities commonly match on.
KEYS: Final[dict[Level, tuple[KeyColumn, ...]]] = {
    Level.PATIENT: (
        KeyColumn(0x00100010, "patient_name", _PN),
        KeyColumn(0x00100030, "patient_birth_date", _DA),
        KeyColumn(0x00100032, "patient_birth_time", _TM),
        KeyColumn(0x00100040, "patient_sex", _T),
    ),
    Level.STUDY: (
        KeyColumn(0x00080020, "study_date", _DA),
        KeyColumn(0x00080030, "study_time", _TM),
        KeyColumn(0x00080050, "accession_number", _T),
        KeyColumn(0x00200010, "study_id", _T),
        KeyColumn(0x00080090, "referring_physician_name", _PN),
        KeyColumn(0x00081030, "study_description", _T),
    ),
    Level.SERIES: (
        KeyColumn(0x00080060, "modality", _T),
        KeyColumn(0x00200011, "series_number", _INT),
        KeyColumn(0x00080021, "series_date", _DA),
        KeyColumn(0x00080031, "series_time", _TM),
        KeyColumn(0x0008103E, "series_description", _T),
        KeyColumn(0x00180015, "body_part_examined", _T),
        KeyColumn(0x00400244, "performed_procedure_step_start_date", _DA),
        KeyColumn(0x00400245, "performed_procedure_step_start_time", _TM),
    ),
    Level.IMAGE: (
        KeyColumn(0x00200013, "instance_number", _INT),
        KeyColumn(0x00080023, "content_date", _DA),
        KeyColumn(0x00080033, "content_time", _TM),
    ),
}

# Multi-valued keys, one row per value in <level>_value (OtherPatientIDs are in
# patient_other_id with their issuer; ModalitiesInStudy and SOPClassesInStudy are derived
# from the series and instance tables).
MULTI_VALUED: Final[dict[Level, tuple[KeyColumn, ...]]] = {
    Level.PATIENT: (KeyColumn(0x00101001, "other_patient_names", _PN),),
    Level.STUDY: (
        KeyColumn(0x00081048, "physicians_of_record", _PN),
        KeyColumn(0x00081060, "name_of_physicians_reading_study", _PN),
        KeyColumn(0x00081080, "admitting_diagnoses_description", _T),
    ),
    Level.SERIES: (
        KeyColumn(0x00081050, "performing_physician_name", _PN),
        KeyColumn(0x00081070, "operators_name", _PN),
    ),
    Level.IMAGE: (),
}

def iter_json_strings(element: Mapping[str, Any] | None) -> Iterator[str]:
    """Every value of a JSON element as a string (PN in its DICOM string form, PS3.18 F.2.2)."""
    if not element:
        return
    for value in element.get("Value") or ():
        if isinstance(value, dict):  # PN: {"Alphabetic": ..., "Ideographic": ..., "Phonetic": ...}
            groups = [value.get(k, "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
            text = "=".join(groups).rstrip("=")
        elif value is None:
            continue
        else:
            text = str(value)
        if text := text.strip():
            yield text


_LEVEL_TABLES: Final = {Level.PATIENT: "patient", Level.STUDY: "study", Level.SERIES: "series",
                         Level.IMAGE: "instance"}
VALUE_LENGTH: Final = 324  # the `value` columns of the multi-valued keys


@functools.cache
def _lengths(level: Level) -> Mapping[str, int]:
    """The length of each text column of a level's table (after the models are defined)."""
    table = Base.metadata.tables[_LEVEL_TABLES[level]]
    return {c.name: c.type.length for c in table.c
            if isinstance(c.type, String) and c.type.length}


def clip(value: str | None, length: int | None) -> str | None:
    """A key value cut to its column: a value longer than its VR allows, as found in the
    field, is indexed (the whole value stays in the level's JSON, where answers come from)
    instead of failing where the database enforces lengths (PostgreSQL)."""
    return value[:length] if value is not None and length else value


def key_values(level: Level, json_ds: Mapping[str, Any]) -> dict[str, Any]:
    """The typed column values of a level's keys, from its DICOM JSON (PS3.18 F.2)."""
    out: dict[str, Any] = {}
    for key in KEYS[level]:
        values = list(iter_json_strings(json_ds.get(f"{key.tag:08X}")))
        raw = "\\".join(values) if values else None  # VM > 1 where 1 is expected: kept whole
        value: Any = raw
        if raw is not None and key.kind is KeyKind.DATE:
            value = normalize_date(raw)
        elif raw is not None and key.kind is KeyKind.TIME:
            value = normalize_time(raw)
        elif raw is not None and key.kind is KeyKind.INT:
            try:
                value = int(float(values[0]))
            except ValueError:
                value = None
        lengths = _lengths(level)
        out[key.column] = clip(value, lengths.get(key.column)) if key.kind is not _INT else value
        if key.kind is KeyKind.PN:
            out[f"{key.column}_folded"] = clip(fold(raw), lengths.get(f"{key.column}_folded"))
    return out


def multi_values(level: Level, json_ds: Mapping[str, Any]) -> list[tuple[int, str, str | None]]:
    """(tag, value, folded value) rows of a level's multi-valued keys."""
    rows = []
    for key in MULTI_VALUED[level]:
        for value in iter_json_strings(json_ds.get(f"{key.tag:08X}")):
            rows.append((key.tag, value[:VALUE_LENGTH],
                         clip(fold(value), VALUE_LENGTH) if key.kind is KeyKind.PN else None))
    return rows


_DATE_RE: Final = re.compile(r"\d{8}")
_TIME_RE: Final = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?")


def fold(value: str | None) -> str | None:
    """The case-folded form PN columns are matched on (PS3.4 C.2.2.2.1: PN case rules)."""
    return value.casefold() if value is not None else None


def normalize_date(value: str) -> str | None:
    """DA as YYYYMMDD; the ACR-NEMA form YYYY.MM.DD is accepted (PS3.5 §6.2 DA)."""
    value = value.strip().replace(".", "")
    return value if _DATE_RE.fullmatch(value) else None


def normalize_time(value: str) -> str | None:
    """TM as HHMMSS.FFFFFF, padded so lexical order is time order (PS3.5 §6.2 TM)."""
    match = _TIME_RE.fullmatch(value.strip().replace(":", ""))
    if match is None:
        return None
    hh, mm, ss, frac = match.groups()
    return f"{hh}{mm or '00'}{ss or '00'}.{(frac or '').ljust(6, '0')}"


class Patient(Base):
    """PS3.4 C.6.1.1.2 patient level; identity is (Patient ID, Issuer of Patient ID)."""

    __tablename__ = "patient"
    __table_args__ = (
        # An empty Patient ID never identifies anyone: such patients are per study, so the
        # identity is unique only where there is an ID (partial index: SQLite and PostgreSQL).
        Index(
            "uq_patient_identity", "patient_id", "issuer_of_patient_id", unique=True,
            sqlite_where=text("patient_id <> ''"), postgresql_where=text("patient_id <> ''"),
        ),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), server_default="")
    patient_name: Mapped[str | None] = mapped_column(String(324), index=True)
    patient_name_folded: Mapped[str | None] = mapped_column(String(324), index=True)
    patient_birth_date: Mapped[str | None] = mapped_column(String(8), index=True)
    patient_birth_time: Mapped[str | None] = mapped_column(String(13))
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    attributes: Mapped[str] = mapped_column(Text)


class PatientOtherId(Base):
    """Other Patient IDs Sequence (0010,1002) items and Other Patient IDs (0010,1000)."""

    __tablename__ = "patient_other_id"
    # Named, not from the convention: that name (69 characters) is over PostgreSQL's 63.
    __table_args__ = (UniqueConstraint("patient_pk", "other_patient_id", "issuer_of_patient_id",
                                       name="uq_patient_other_id_identity"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.pk", ondelete="CASCADE"))
    other_patient_id: Mapped[str] = mapped_column(String(64), index=True)
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), server_default="")


class Study(Base):
    """PS3.4 C.6.1.1.3 study level."""

    __tablename__ = "study"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.pk"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_date: Mapped[str | None] = mapped_column(String(8), index=True)
    study_time: Mapped[str | None] = mapped_column(String(13))
    accession_number: Mapped[str | None] = mapped_column(String(16), index=True)
    study_id: Mapped[str | None] = mapped_column(String(16), index=True)
    referring_physician_name: Mapped[str | None] = mapped_column(String(324))
    referring_physician_name_folded: Mapped[str | None] = mapped_column(String(324), index=True)
    study_description: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[str] = mapped_column(Text)


class Series(Base):
    """PS3.4 C.6.1.1.4 series level."""

    __tablename__ = "series"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.pk"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_date: Mapped[str | None] = mapped_column(String(8), index=True)
    series_time: Mapped[str | None] = mapped_column(String(13))
    series_description: Mapped[str | None] = mapped_column(String(64))
    body_part_examined: Mapped[str | None] = mapped_column(String(16))
    performed_procedure_step_start_date: Mapped[str | None] = mapped_column(String(8))
    performed_procedure_step_start_time: Mapped[str | None] = mapped_column(String(13))
    attributes: Mapped[str] = mapped_column(Text)


class Instance(Base):
    """PS3.4 C.6.1.1.5 composite object instance level, with its file."""

    __tablename__ = "instance"
    __table_args__ = (
        # Serves every lookup by series, and covers C-FIND's SOPClassesInStudy and
        # instance counts without reading instance rows (revision 0002).
        Index("ix_instance_series_pk_sop_class_uid", "series_pk", "sop_class_uid"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.pk"))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    content_date: Mapped[str | None] = mapped_column(String(8))
    content_time: Mapped[str | None] = mapped_column(String(13))
    storage_key: Mapped[str] = mapped_column(String(64), unique=True)
    file_size: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str] = mapped_column(String(80))
    dataset_offset: Mapped[int] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    calling_ae_title: Mapped[str] = mapped_column(String(16))
    called_ae_title: Mapped[str] = mapped_column(String(16))
    attributes: Mapped[str] = mapped_column(Text)


class _ValueMixin:
    """One value of a multi-valued key: (owner, tag, value, folded value)."""

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag: Mapped[int] = mapped_column(Integer)
    value: Mapped[str] = mapped_column(String(324))
    value_folded: Mapped[str | None] = mapped_column(String(324))


class PatientValue(_ValueMixin, Base):
    __tablename__ = "patient_value"
    __table_args__ = (
        Index("ix_patient_value_tag_value", "tag", "value"),
        Index("ix_patient_value_tag_value_folded", "tag", "value_folded"),
    )
    owner_pk: Mapped[int] = mapped_column(ForeignKey("patient.pk", ondelete="CASCADE"), index=True)


class StudyValue(_ValueMixin, Base):
    __tablename__ = "study_value"
    __table_args__ = (
        Index("ix_study_value_tag_value", "tag", "value"),
        Index("ix_study_value_tag_value_folded", "tag", "value_folded"),
    )
    owner_pk: Mapped[int] = mapped_column(ForeignKey("study.pk", ondelete="CASCADE"), index=True)


class SeriesValue(_ValueMixin, Base):
    __tablename__ = "series_value"
    __table_args__ = (
        Index("ix_series_value_tag_value", "tag", "value"),
        Index("ix_series_value_tag_value_folded", "tag", "value_folded"),
    )
    owner_pk: Mapped[int] = mapped_column(ForeignKey("series.pk", ondelete="CASCADE"), index=True)


class UnreferencedFile(Base):
    """A stored file no row points to any more, to delete (revision 0007).

    Written in the transaction that repoints an instance to its replacement (duplicates
    policy ``replace``), so a crash before the old file is unlinked leaves a record, not an
    orphan nobody knows of; the start-up recovery deletes the file and the row.
    """

    __tablename__ = "unreferenced_file"

    storage_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
