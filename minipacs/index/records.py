"""The SQL of one instance record, in the caller's transaction (the index writer's thread).

The usual record, another instance of a series already indexed whose patient, study and
series attributes it repeats, is one INSERT ... SELECT that checks all that in SQL
(`statements.INSERT_INTO_KNOWN_SERIES`, `RecordWriter.add_fast`): nothing is cached, so other
processes' deletes and writes are always seen. Every other record takes `RecordWriter.add`.

Rules (README and conformance statement):
- duplicate SOP Instance UID (config ``storage.duplicates``, default ``keep-first``):
  ``keep-first``, or ``replace`` (the row is repointed to the new file and the old key is
  returned, to be deleted only after this commit, and recorded in ``unreferenced_file`` by
  it, so a crash before the unlink is recovered at start);
- patient/study/series attributes: merged, the latest instance wins for each attribute it
  carries, attributes it lacks keep their value; changed key values are logged;
- patient identity is (Patient ID, Issuer of Patient ID), a missing issuer being ""; an
  empty Patient ID never merges patients: the instance joins its study's patient, or a new
  patient is made for the new study;
- a study arriving under another patient than before (config ``storage.patient_conflict``,
  default ``refuse``): the instance is refused, or (``keep-apart``) joins the study, which
  stays with its patient; a study is never moved to another patient. A series (instance)
  arriving under another study (series) moves there, logged as a warning; a parent left
  empty is deleted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import Engine, delete, exists, select
from sqlalchemy.engine import Connection

from ..ports import (
    AddOutcome,
    AddResult,
    DuplicatePolicy,
    InstanceAttributes,
    InstanceRecord,
    PatientConflict,
    PatientConflictPolicy,
)
from .engine import Prepared, dialect_of
from .models import Level, UnreferencedFile, key_values, multi_values
from .statements import (
    CLEAR_OTHER_IDS,
    INSERT_INSTANCE,
    INSERT_INTO_KNOWN_SERIES,
    INSERT_OTHER_IDS,
    INSTANCE_BY_UID,
    PATIENT,
    PATIENT_BY_ID,
    PATIENT_OF_STUDY,
    SERIES,
    STUDY,
    UPDATE_INSTANCE,
    LevelSpec,
)

__all__ = ["RecordWriter"]

log = logging.getLogger("minipacs.index")

TAG_OTHER_PATIENT_IDS: Final = "00101000"  # retired LO, VM 1-n
TAG_OTHER_PATIENT_IDS_SEQUENCE: Final = "00101002"
TAG_PATIENT_ID: Final = "00100020"
TAG_ISSUER_OF_PATIENT_ID: Final = "00100021"


def _dumps(json_ds: Mapping[str, Any]) -> str:
    return json.dumps(json_ds, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class _JsonCache:
    """The serialised level JSON of the series (studies, patients) seen last.

    Every instance of a series repeats its patient, study and series attributes; comparing
    the parsed dictionaries with the last ones is cheaper than serialising them again.
    """

    SIZE: Final = 64

    def __init__(self) -> None:
        self._last: dict[object, tuple[Mapping[str, Any], str]] = {}

    def dumps(self, key: object, json_ds: Mapping[str, Any]) -> str:
        hit = self._last.get(key)
        if hit is not None and hit[0] == json_ds:
            return hit[1]
        text = _dumps(json_ds)
        if len(self._last) >= self.SIZE:
            del self._last[next(iter(self._last))]  # the oldest
        self._last[key] = (json_ds, text)
        return text


class RecordWriter:
    """Writes one record's rows on a connection whose transaction the caller owns."""

    def __init__(self, engine: Engine, *, duplicate_policy: DuplicatePolicy,
                 patient_conflict: PatientConflictPolicy) -> None:
        self.duplicate_policy = duplicate_policy
        self.patient_conflict = patient_conflict
        # A key may be recorded already (an index rebuilt from files since): once is enough.
        self._unreferenced = dialect_of(engine).insert_ignoring_duplicates(
            UnreferencedFile.__table__)
        self._json = _JsonCache()
        self._insert_known = Prepared(INSERT_INTO_KNOWN_SERIES, engine)
        self.fast_records = 0  # records written by the one-statement path

    def _instance_values(self, record: InstanceRecord) -> dict[str, Any]:
        """The instance row's columns but the series and the UID (PS3.4 C.6.1.1.5 keys)."""
        attrs = record.attributes
        stored = record.stored
        return {
            "sop_class_uid": attrs.sop_class_uid,
            "storage_key": stored.key,
            "file_size": stored.size,
            "checksum": stored.checksum,
            "dataset_offset": stored.dataset_offset,
            "transfer_syntax_uid": record.transfer_syntax_uid,
            "received_at": record.received_at,
            "calling_ae_title": record.calling_ae_title,
            "called_ae_title": record.called_ae_title,
            "attributes": _dumps(attrs.instance),
            **key_values(Level.IMAGE, attrs.instance),
        }

    def add_fast(self, conn: Connection, record: InstanceRecord) -> AddResult | None:
        """A new instance of a known, unchanged series in one statement; None: not that case."""
        attrs = record.attributes
        values = {"sop_instance_uid": attrs.sop_instance_uid, **self._instance_values(record)}
        inserted = self._insert_known.execute(conn, {
            **{f"v_{name}": value for name, value in values.items()},
            "k_instance": attrs.sop_instance_uid,
            "k_series": attrs.series_instance_uid,
            "k_series_json": self._json.dumps(("series", attrs.series_instance_uid),
                                              attrs.series),
            "k_study": attrs.study_instance_uid,
            "k_study_json": self._json.dumps(("study", attrs.study_instance_uid), attrs.study),
            "k_patient_id": attrs.patient_id,
            "k_issuer": attrs.issuer_of_patient_id,
            "k_patient_json": self._json.dumps(
                ("patient", attrs.patient_id, attrs.issuer_of_patient_id), attrs.patient),
        })
        if inserted != 1:
            return None
        self.fast_records += 1
        return AddResult(AddOutcome.ADDED)

    def add(self, conn: Connection, record: InstanceRecord) -> AddResult:
        """The full path: duplicates policy, patient identity, level rows merged or moved."""
        attrs = record.attributes
        existing = conn.execute(INSTANCE_BY_UID, {"uid": attrs.sop_instance_uid}).first()
        if existing is not None and self.duplicate_policy is DuplicatePolicy.KEEP_FIRST:
            log.debug("instance %s received again: first copy kept", attrs.sop_instance_uid)
            return AddResult(AddOutcome.KEPT_FIRST)
        patient_pk = self._study_patient(conn, attrs)
        if patient_pk is None:
            patient_pk = self._patient(conn, attrs)
        study_pk = self._upsert(conn, STUDY, attrs.study_instance_uid, patient_pk, attrs.study)
        series_pk = self._upsert(
            conn, SERIES, attrs.series_instance_uid, study_pk, attrs.series
        )
        values = {"series_pk": series_pk, **self._instance_values(record)}
        if existing is None:
            conn.execute(INSERT_INSTANCE, {"sop_instance_uid": attrs.sop_instance_uid, **values})
            return AddResult(AddOutcome.ADDED)
        conn.execute(UPDATE_INSTANCE, {"b_pk": existing.pk, **values})
        # In this transaction: a crash before the caller unlinks the old file leaves a record.
        conn.execute(self._unreferenced, {"storage_key": existing.storage_key,
                                           "since": record.received_at})
        if existing.series_pk != series_pk:
            log.warning("instance %s moved to series %s", attrs.sop_instance_uid,
                        attrs.series_instance_uid)
            self._drop_if_empty(conn, SERIES, existing.series_pk)
        log.debug("instance %s replaced (old file %s)", attrs.sop_instance_uid,
                  existing.storage_key)
        return AddResult(AddOutcome.REPLACED, existing.storage_key)

    def _study_patient(self, conn: Connection, attrs: InstanceAttributes) -> int | None:
        """The patient of the instance's study when it must stay there; None: no such study,
        or the instance names the same patient (it goes through `_patient` then).

        A study indexed under another (Patient ID, Issuer) is refused or kept where it is
        (`patient_conflict`), never moved. An instance without a Patient ID joins its
        study's patient (module docstring), which is no conflict.
        """
        if not attrs.patient_id:
            return None
        row = conn.execute(PATIENT_OF_STUDY, {"uid": attrs.study_instance_uid}).first()
        if row is None or (row.patient_id, row.issuer_of_patient_id) == (
                attrs.patient_id, attrs.issuer_of_patient_id):
            return None
        log.warning("study %s is indexed under patient %r (issuer %r), instance %s names "
                    "patient %r (issuer %r): %s", attrs.study_instance_uid, row.patient_id,
                    row.issuer_of_patient_id, attrs.sop_instance_uid, attrs.patient_id,
                    attrs.issuer_of_patient_id, self.patient_conflict)
        if self.patient_conflict is PatientConflictPolicy.REFUSE:
            raise PatientConflict("Patient ID differs from the study's patient in the archive")
        return int(row.pk)

    def _patient(self, conn: Connection, attrs: InstanceAttributes) -> int:
        """The patient row of `attrs`, created or updated (identity rule: module docstring)."""
        if attrs.patient_id:
            row = conn.execute(
                PATIENT_BY_ID, {"pid": attrs.patient_id, "issuer": attrs.issuer_of_patient_id}
            ).first()
            if row is not None:
                self._merge(conn, PATIENT, row.pk, row.attributes, attrs.patient, attrs.patient_id)
                return int(row.pk)
        else:
            row = conn.execute(PATIENT_OF_STUDY, {"uid": attrs.study_instance_uid}).first()
            if row is not None:
                if not row.patient_id:  # never let an ID-less instance rewrite a known patient
                    self._merge(conn, PATIENT, row.pk, row.attributes, attrs.patient, "")
                return int(row.pk)
        pk = conn.execute(PATIENT.insert, {
            "patient_id": attrs.patient_id,
            "issuer_of_patient_id": attrs.issuer_of_patient_id,
            "attributes": _dumps(attrs.patient),
            **key_values(Level.PATIENT, attrs.patient),
        }).inserted_primary_key[0]
        self._set_values(conn, PATIENT, pk, attrs.patient)
        return int(pk)

    def _upsert(self, conn: Connection, spec: LevelSpec, uid: str, parent_pk: int,
                json_ds: Mapping[str, Any]) -> int:
        """The study or series row `uid`, created, moved under `parent_pk` or merged."""
        assert spec.find is not None
        row = conn.execute(spec.find, {"uid": uid}).first()
        if row is None:
            pk = conn.execute(spec.insert, {
                spec.uid_column: uid, spec.parent_column: parent_pk,
                "attributes": _dumps(json_ds), **key_values(spec.level, json_ds),
            }).inserted_primary_key[0]
            self._set_values(conn, spec, pk, json_ds)
            return int(pk)
        if row.parent_pk != parent_pk:
            log.warning("%s %s moved from %s pk %d to pk %d", spec.level.value.lower(), uid,
                        spec.parent_column.removesuffix("_pk"), row.parent_pk, parent_pk)
            conn.execute(spec.update, {"b_pk": row.pk, spec.parent_column: parent_pk})
            assert spec.parent_level is not None
            self._drop_if_empty(conn, spec.parent_level, row.parent_pk)
        self._merge(conn, spec, row.pk, row.attributes, json_ds, uid)
        return int(row.pk)

    def _merge(self, conn: Connection, spec: LevelSpec, pk: int, stored: str,
               json_ds: Mapping[str, Any], uid: str) -> None:
        """Latest wins per attribute; attributes the instance lacks keep their value."""
        if _dumps(json_ds) == stored:
            return  # the common case: every instance of a series repeats its attributes
        old = json.loads(stored)
        merged = {**old, **json_ds}
        if merged == old:
            return
        before, after = key_values(spec.level, old), key_values(spec.level, merged)
        changed = {k: (before[k], v) for k, v in after.items() if before[k] != v}
        if changed:
            log.info("%s %s: %s", spec.level.value.lower(), uid,
                     ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        conn.execute(spec.update, {"b_pk": pk, "attributes": _dumps(merged), **after})
        self._set_values(conn, spec, pk, merged)

    def _set_values(self, conn: Connection, spec: LevelSpec, pk: int,
                    json_ds: Mapping[str, Any]) -> None:
        """Replace the child rows of multi-valued keys (and Other Patient IDs)."""
        conn.execute(spec.clear_values, {"b_pk": pk})
        rows = [{"owner_pk": pk, "tag": tag, "value": value, "value_folded": folded}
                for tag, value, folded in multi_values(spec.level, json_ds)]
        if rows:
            conn.execute(spec.insert_values, rows)
        if spec is PATIENT:
            conn.execute(CLEAR_OTHER_IDS, {"b_pk": pk})
            others = [{"patient_pk": pk, "other_patient_id": pid, "issuer_of_patient_id": issuer}
                      for pid, issuer in _other_patient_ids(json_ds)]
            if others:
                conn.execute(INSERT_OTHER_IDS, others)

    def _drop_if_empty(self, conn: Connection, spec: LevelSpec, pk: int) -> None:
        """Delete a patient, study or series row left without children, then its parent."""
        if conn.execute(select(exists().where(spec.child_fk == pk))).scalar():
            return
        table = spec.table
        parent_pk = None
        if spec.parent_level is not None:
            parent_pk = conn.execute(
                select(table.c[spec.parent_column]).where(table.c.pk == pk)
            ).scalar_one()
        conn.execute(delete(table).where(table.c.pk == pk))  # child value rows: ON DELETE CASCADE
        log.info("empty %s pk %d removed", spec.level.value.lower(), pk)
        if spec.parent_level is not None and parent_pk is not None:
            self._drop_if_empty(conn, spec.parent_level, parent_pk)


def _other_patient_ids(json_ds: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(ID, issuer) pairs of Other Patient IDs Sequence (0010,1002) and (0010,1000)."""
    pairs = set()
    for item in json_ds.get(TAG_OTHER_PATIENT_IDS_SEQUENCE, {}).get("Value") or ():
        pid = (item.get(TAG_PATIENT_ID, {}).get("Value") or [""])[0] or ""
        issuer = (item.get(TAG_ISSUER_OF_PATIENT_ID, {}).get("Value") or [""])[0] or ""
        if pid.strip():
            pairs.add((pid.strip(), issuer.strip()))
    for pid in json_ds.get(TAG_OTHER_PATIENT_IDS, {}).get("Value") or ():
        if pid and pid.strip():
            pairs.add((pid.strip(), ""))
    return pairs
