"""C-FIND answers: a page's rows as DICOM JSON, with the computed keys of their level.

PS3.18 F.2 (JSON), PS3.4 C.6.1.1.2-C.6.1.1.4 (NumberOf...Related..., ModalitiesInStudy,
SOPClassesInStudy). Computed keys come from grouped SQL over the page's primary keys: no
instance row is loaded into Python.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection

from ..ports import JsonDataset
from .models import Instance, Level, Series, Study

__all__ = ["computed_keys", "identifying_columns", "merge_answer"]

TAG_NUMBER_OF_PATIENT_RELATED_STUDIES: Final = "00201200"
TAG_NUMBER_OF_PATIENT_RELATED_SERIES: Final = "00201202"
TAG_NUMBER_OF_PATIENT_RELATED_INSTANCES: Final = "00201204"
TAG_NUMBER_OF_STUDY_RELATED_SERIES: Final = "00201206"
TAG_NUMBER_OF_STUDY_RELATED_INSTANCES: Final = "00201208"
TAG_NUMBER_OF_SERIES_RELATED_INSTANCES: Final = "00201209"
TAG_MODALITIES_IN_STUDY: Final = "00080061"
TAG_SOP_CLASSES_IN_STUDY: Final = "00080062"

# Typed identifying columns → (tag, VR): returned from the columns the index keys rows by,
# so every answer carries the unique keys of its level and the levels above (C.4.1.1.3.1).
_IDENTIFYING: Final = {
    "patient_id": ("00100020", "LO"),
    "issuer_of_patient_id": ("00100021", "LO"),
    "study_instance_uid": ("0020000D", "UI"),
    "series_instance_uid": ("0020000E", "UI"),
    "sop_instance_uid": ("00080018", "UI"),
    "sop_class_uid": ("00080016", "UI"),
}
_CHUNK: Final = 500  # primary keys per IN list


def _element(vr: str, values: Sequence[Any]) -> dict[str, Any]:
    """A DICOM JSON element (PS3.18 F.2.2); no "Value" when there is none."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def identifying_columns(columns: Iterable[str]) -> tuple[str, ...]:
    """Which of a row's columns are typed identifiers `merge_answer` returns (once per page:
    asking each row costs more than the merge)."""
    present = set(columns)
    return tuple(column for column in _IDENTIFYING if column in present)


def merge_answer(levels: Iterable[Mapping[str, Any]], row: Mapping[str, Any],
                 computed: JsonDataset, identifying: Iterable[str] | None = None) -> JsonDataset:
    """One answer: the levels' JSON top down, the typed identifiers, then computed keys.

    `identifying`: the row's identifier columns (`identifying_columns`), when known.
    """
    merged: dict[str, Any] = {}
    for attributes in levels:
        merged.update(attributes)
    for column in identifying_columns(row) if identifying is None else identifying:
        tag, vr = _IDENTIFYING[column]
        value = row[column] or ""
        if column == "issuer_of_patient_id" and not value:
            continue  # a missing issuer is "" in the index: return what was stored, if any
        merged[tag] = _element(vr, [value] if value else [])
    merged.update(computed)
    return dict(sorted(merged.items()))


def _chunks(pks: Sequence[int]) -> Iterable[Sequence[int]]:
    return (pks[i:i + _CHUNK] for i in range(0, len(pks), _CHUNK))


# Built once: `:pks` expands at execution, so SQLAlchemy reuses their compiled form.
_PKS: Final = bindparam("pks", expanding=True)
_PATIENT_COUNTS: Final = (
    select(Study.patient_pk, func.count(Study.pk.distinct()), func.count(Series.pk.distinct()),
           func.count(Instance.pk))
    .join(Series, Series.study_pk == Study.pk)
    .join(Instance, Instance.series_pk == Series.pk)
    .where(Study.patient_pk.in_(_PKS))
    .group_by(Study.patient_pk)
)
_STUDY_MODALITIES: Final = (
    select(Series.study_pk, Series.modality, func.count())
    .where(Series.study_pk.in_(_PKS))
    .group_by(Series.study_pk, Series.modality)
)
_STUDY_CLASSES: Final = (  # the instance index (series_pk, sop_class_uid) covers it
    select(Series.study_pk, Instance.sop_class_uid, func.count())
    .join(Instance, Instance.series_pk == Series.pk)
    .where(Series.study_pk.in_(_PKS))
    .group_by(Series.study_pk, Instance.sop_class_uid)
)
_SERIES_COUNTS: Final = (
    select(Instance.series_pk, func.count())
    .where(Instance.series_pk.in_(_PKS))
    .group_by(Instance.series_pk)
)


def computed_keys(conn: Connection, level: Level, pks: Sequence[int]) -> dict[int, JsonDataset]:
    """The computed keys of `level` for the entities `pks` (PS3.4 C.6.1.1.2-C.6.1.1.4)."""
    if not pks or level is Level.IMAGE:
        return {}
    if level is Level.PATIENT:
        return _patient_counts(conn, pks)
    if level is Level.STUDY:
        return _study_keys(conn, pks)
    return _series_counts(conn, pks)


def _patient_counts(conn: Connection, pks: Sequence[int]) -> dict[int, JsonDataset]:
    counts = {pk: (0, 0, 0) for pk in pks}
    for chunk in _chunks(pks):
        for pk, studies, series, instances in conn.execute(_PATIENT_COUNTS, {"pks": chunk}):
            counts[pk] = (studies, series, instances)
    return {pk: {
        TAG_NUMBER_OF_PATIENT_RELATED_STUDIES: _element("IS", [studies]),
        TAG_NUMBER_OF_PATIENT_RELATED_SERIES: _element("IS", [series]),
        TAG_NUMBER_OF_PATIENT_RELATED_INSTANCES: _element("IS", [instances]),
    } for pk, (studies, series, instances) in counts.items()}


def _study_keys(conn: Connection, pks: Sequence[int]) -> dict[int, JsonDataset]:
    series_count: dict[int, int] = defaultdict(int)
    instance_count: dict[int, int] = defaultdict(int)
    modalities: dict[int, set[str]] = defaultdict(set)
    classes: dict[int, set[str]] = defaultdict(set)
    for chunk in _chunks(pks):
        for pk, modality, n in conn.execute(_STUDY_MODALITIES, {"pks": chunk}):
            series_count[pk] += n
            if modality:
                modalities[pk].add(modality)
        for pk, sop_class, n in conn.execute(_STUDY_CLASSES, {"pks": chunk}):
            instance_count[pk] += n
            classes[pk].add(sop_class)
    return {pk: {
        TAG_NUMBER_OF_STUDY_RELATED_SERIES: _element("IS", [series_count[pk]]),
        TAG_NUMBER_OF_STUDY_RELATED_INSTANCES: _element("IS", [instance_count[pk]]),
        TAG_MODALITIES_IN_STUDY: _element("CS", sorted(modalities[pk])),
        TAG_SOP_CLASSES_IN_STUDY: _element("UI", sorted(classes[pk])),
    } for pk in pks}


def _series_counts(conn: Connection, pks: Sequence[int]) -> dict[int, JsonDataset]:
    counts = dict.fromkeys(pks, 0)
    for chunk in _chunks(pks):
        counts.update({pk: n for pk, n in conn.execute(_SERIES_COUNTS, {"pks": chunk})})
    return {pk: {TAG_NUMBER_OF_SERIES_RELATED_INSTANCES: _element("IS", [n])}
            for pk, n in counts.items()}
