"""The index writer's SQL, built once: SQLAlchemy then reuses each statement's compiled form.

Building a statement per row cost more than executing it (DESIGN principle 11: the writer
owns every index write; these are its statements, per level and for instances).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    Column,
    Delete,
    Insert,
    Select,
    Table,
    Update,
    bindparam,
    delete,
    exists,
    insert,
    select,
    update,
)

from .models import (
    Instance,
    Level,
    Patient,
    PatientOtherId,
    PatientValue,
    Series,
    SeriesValue,
    Study,
    StudyValue,
)

__all__ = [
    "CLEAR_OTHER_IDS",
    "INSERT_INSTANCE",
    "INSERT_INTO_KNOWN_SERIES",
    "INSERT_OTHER_IDS",

    "INSTANCE_BY_UID",
    "PATIENT",
    "PATIENT_BY_ID",
    "PATIENT_OF_STUDY",
    "SERIES",
    "STUDY",
    "UPDATE_INSTANCE",
    "LevelSpec",
]

_INSTANCE = Instance.__table__
_PATIENT_TABLE = Patient.__table__
_OTHER_IDS = PatientOtherId.__table__
INSTANCE_BY_UID: Final = select(_INSTANCE.c.pk, _INSTANCE.c.storage_key,
                                 _INSTANCE.c.series_pk).where(
    _INSTANCE.c.sop_instance_uid == bindparam("uid"))
INSERT_INSTANCE: Final = insert(_INSTANCE)
UPDATE_INSTANCE: Final = update(_INSTANCE).where(_INSTANCE.c.pk == bindparam("b_pk"))
PATIENT_BY_ID: Final = select(_PATIENT_TABLE.c.pk, _PATIENT_TABLE.c.attributes).where(
    _PATIENT_TABLE.c.patient_id == bindparam("pid"),
    _PATIENT_TABLE.c.issuer_of_patient_id == bindparam("issuer"),
)
PATIENT_OF_STUDY: Final = (
    select(Patient.pk, Patient.patient_id, Patient.issuer_of_patient_id, Patient.attributes)
    .join(Study, Study.patient_pk == Patient.pk)
    .where(Study.study_instance_uid == bindparam("uid"))
)
CLEAR_OTHER_IDS: Final = delete(_OTHER_IDS).where(_OTHER_IDS.c.patient_pk == bindparam("b_pk"))
INSERT_OTHER_IDS: Final = insert(_OTHER_IDS)


def _known_series_insert() -> Insert:
    """INSERT an instance into a known series whose levels it leaves unchanged, or nothing.

    One statement for the common case (another instance of a series already indexed, with
    the same patient, study and series attributes): the row is inserted only when the series,
    its study and its patient exist, are linked as the instance says, have the patient
    identity it carries and hold exactly the level JSON it carries, and the SOP Instance UID
    is new. Then the full path would merge nothing and move nothing, so skipping it changes
    nothing; the check is in the same transaction, so another process's `minipacs delete`
    or writes are seen. Otherwise no row is inserted and the caller takes the full path.
    Parameters are the instance's columns (``v_<column>``) and ``k_<key>``.
    """
    series, study, patient = Series.__table__, Study.__table__, Patient.__table__
    columns = [c for c in _INSTANCE.c if not c.primary_key]
    values = [series.c.pk if c.name == "series_pk" else bindparam(f"v_{c.name}", type_=c.type)
              for c in columns]
    found = (
        select(*values)
        .select_from(series.join(study, study.c.pk == series.c.study_pk)
                     .join(patient, patient.c.pk == study.c.patient_pk))
        .where(
            series.c.series_instance_uid == bindparam("k_series"),
            series.c.attributes == bindparam("k_series_json"),
            study.c.study_instance_uid == bindparam("k_study"),
            study.c.attributes == bindparam("k_study_json"),
            patient.c.patient_id == bindparam("k_patient_id"),
            patient.c.issuer_of_patient_id == bindparam("k_issuer"),
            patient.c.attributes == bindparam("k_patient_json"),
            ~exists().where(_INSTANCE.c.sop_instance_uid == bindparam("k_instance")),
        )
    )
    # The caller reads rowcount: SQLAlchemy keeps an INSERT's only when asked (psycopg's
    # cursor says -1 once closed).
    return insert(_INSTANCE).from_select(columns, found).execution_options(
        preserve_rowcount=True)


INSERT_INTO_KNOWN_SERIES: Final = _known_series_insert()


@dataclass(frozen=True, slots=True)
class LevelSpec:
    """One level's table, its link to the parent and its prebuilt statements."""

    level: Level
    table: Table
    values: Table  # the level's multi-valued keys
    uid_column: str
    parent_column: str
    parent_level: LevelSpec | None
    child_fk: Column[int]  # the column of the level below that points here
    find: Select[Any] | None  # by :uid → pk, parent_pk, attributes (patients: by identity)
    insert: Insert
    update: Update  # WHERE pk = :b_pk, SET from the parameters
    clear_values: Delete
    insert_values: Insert


def _level_spec(level: Level, model: Any, value_model: Any, uid_column: str,
                parent_column: str, parent_level: LevelSpec | None, child_fk: Any) -> LevelSpec:
    table: Table = model.__table__
    values: Table = value_model.__table__
    find = None
    if parent_column:
        find = select(table.c.pk, table.c[parent_column].label("parent_pk"),
                      table.c.attributes).where(table.c[uid_column] == bindparam("uid"))
    return LevelSpec(
        level, table, values, uid_column, parent_column, parent_level, child_fk, find=find,
        insert=insert(table),
        update=update(table).where(table.c.pk == bindparam("b_pk")),
        clear_values=delete(values).where(values.c.owner_pk == bindparam("b_pk")),
        insert_values=insert(values),
    )


PATIENT: Final = _level_spec(Level.PATIENT, Patient, PatientValue, "patient_id", "", None,
                             Study.patient_pk)
STUDY: Final = _level_spec(Level.STUDY, Study, StudyValue, "study_instance_uid", "patient_pk",
                           PATIENT, Series.study_pk)
SERIES: Final = _level_spec(Level.SERIES, Series, SeriesValue, "series_instance_uid",
                            "study_pk", STUDY, Instance.series_pk)
