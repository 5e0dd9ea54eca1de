"""The synthetic population of the C-FIND benchmark: deterministic, fixed cardinalities.

For ``instances = N`` (a multiple of 200): N/25 patients, each with 1-4 studies (exactly a
quarter of the patients have each count, shuffled), so N/10 studies; each study has 1-4
series likewise, so N/4 series; each series 4 instances. 1,000,000 instances = 40,000
patients, 100,000 studies, 250,000 series; 10,000 = 400, 1,000, 2,500.

The benchmark's queries have answer counts that do not grow with N, so the growth of the
figures with the index size is the index's, not the result's:
- ``SMITH*``: exactly 20 patients are named SMITH^<given>; no other name starts with SMITH;
- March 2019 (20190301-20190331): exactly 50 studies; every other study date is drawn from
  2010-01-01..2024-12-31 outside that month;
- one patient with 4 studies (PatientID), one study (AccessionNumber, unique per study), one
  study with 4 series (series-level query).
Modalities are mixed (CT, MR, CR, US, DX, MG, PT with CT series, NM). Names are ASCII,
upper case (PN case rules then make no difference between servers). UIDs are built from
pydicom's root and the entity numbers (structured, so they are unique and cheap).

Two renderings of the same entity: ``*_json`` gives the DICOM JSON (PS3.18 F.2) that
minipacs' extractor makes of the stored file, split by level as it splits it; ``dataset``
gives the pydicom data set written as the Part 10 file that Orthanc and qrscp receive.
The same (instances, seed) gives the same population on every run (CPython's ``random``).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    PYDICOM_ROOT_UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    NuclearMedicineImageStorage,
    PositronEmissionTomographyImageStorage,
    UltrasoundImageStorage,
)

__all__ = [
    "SEED",
    "Patient",
    "Population",
    "Series",
    "Study",
    "Targets",
    "build",
    "write_files",
]

SEED: Final = "minipacs-find-benchmark-v1"
UNIT: Final = 200  # N must be a multiple: N/25 patients and N/10 studies divisible by 4
PATIENTS_PER: Final = 25  # instances per patient (2.5 studies x 2.5 series x 4 instances)
STUDIES_PER: Final = 10  # instances per study
INSTANCES_PER_SERIES: Final = 4
COUNTS: Final = (1, 2, 3, 4)  # studies per patient, series per study: a quarter each
SMITHS: Final = 20
MONTH_STUDIES: Final = 50
MONTH_LOW: Final = "20190301"
MONTH_HIGH: Final = "20190331"
FIRST_DAY: Final = dt.date(2010, 1, 1)
LAST_DAY: Final = dt.date(2024, 12, 31)
UID_ROOT: Final = f"{PYDICOM_ROOT_UID}77"  # then .<kind>.<numbers>; kinds below
IMAGE_TYPE: Final = ("ORIGINAL", "PRIMARY")

SURNAMES: Final = (
    "JONES", "BROWN", "TAYLOR", "WILSON", "DAVIES", "EVANS", "THOMAS", "JOHNSON", "ROBERTS",
    "WALKER", "WRIGHT", "ROBINSON", "THOMPSON", "WHITE", "HUGHES", "EDWARDS", "GREEN", "HALL",
    "WOOD", "HARRIS", "LEWIS", "MARTIN", "JACKSON", "CLARKE", "CLARK", "TURNER", "HILL",
    "SCOTT", "COOPER", "MORRIS", "WARD", "MOORE", "KING", "WATSON", "BAKER", "HARRISON",
    "MORGAN", "PATEL", "YOUNG", "ALLEN", "MITCHELL", "JAMES", "ANDERSON", "PHILLIPS", "LEE",
    "BELL", "PARKER", "DAVIS", "MULLER", "SCHMIDT", "SCHNEIDER", "FISCHER", "WEBER", "MEYER",
    "WAGNER", "BECKER", "SCHULZ", "HOFFMANN", "DUBOIS", "MOREAU", "LAURENT", "SIMON", "MICHEL",
    "GARCIA", "MARTINEZ", "LOPEZ", "SANCHEZ", "PEREZ", "GOMEZ", "ROSSI", "RUSSO", "FERRARI",
)
GIVEN: Final = (
    "JOHN", "MARY", "JAMES", "ANNA", "PETER", "SARAH", "DAVID", "LAURA", "PAUL", "EMMA",
    "MARK", "JULIA", "THOMAS", "CLARA", "DANIEL", "SOPHIE", "MICHAEL", "ALICE", "ROBERT",
    "HELEN", "KARL", "MARIE", "LUCA", "ELENA", "JAN", "EVA", "OMAR", "LENA", "IVAN", "NORA",
)
STAFF: Final = tuple(f"{s}^{g}" for s, g in zip(SURNAMES[::7], GIVEN[::3], strict=False))

# Modality → (weight, SOP class, body parts); a PT study's even-numbered series are CT.
MODALITIES: Final[dict[str, tuple[int, str, tuple[str, ...]]]] = {
    "CT": (30, CTImageStorage, ("CHEST", "ABDOMEN", "HEAD")),
    "MR": (20, MRImageStorage, ("BRAIN", "KNEE", "SPINE")),
    "CR": (18, ComputedRadiographyImageStorage, ("CHEST", "HAND", "FOOT")),
    "US": (10, UltrasoundImageStorage, ("ABDOMEN", "THYROID")),
    "DX": (10, DigitalXRayImageStorageForPresentation, ("CHEST", "PELVIS")),
    "MG": (5, DigitalMammographyXRayImageStorageForPresentation, ("BREAST",)),
    "PT": (4, PositronEmissionTomographyImageStorage, ("WHOLEBODY",)),
    "NM": (3, NuclearMedicineImageStorage, ("BONE", "HEART")),
}
_MODALITY_NAMES: Final = tuple(MODALITIES)
_MODALITY_WEIGHTS: Final = tuple(w for w, _, _ in MODALITIES.values())


@dataclass(frozen=True, slots=True)
class Patient:
    number: int  # 1-based
    patient_id: str
    name: str
    birth_date: str
    sex: str


@dataclass(frozen=True, slots=True)
class Study:
    number: int
    patient: Patient
    uid: str
    date: str
    time: str
    accession: str
    study_id: str
    description: str
    referring: str
    readers: tuple[str, ...]
    modality: str
    body_part: str


@dataclass(frozen=True, slots=True)
class Series:
    number: int  # 1-based over the whole population
    study: Study
    series_number: int  # 1-based within the study
    uid: str
    modality: str
    sop_class: str
    description: str
    operators: tuple[str, ...]
    instances: int


@dataclass(frozen=True, slots=True)
class Targets:
    """The benchmark's query values and how many entities each must match."""

    patient_id: str
    patient_id_studies: int
    name_pattern: str
    name_matches: int
    date_range: str
    date_matches: int
    accession: str
    series_study_uid: str
    series_matches: int


@dataclass(frozen=True, slots=True)
class Population:
    instances: int
    seed: str
    patients: tuple[Patient, ...]
    studies: tuple[Study, ...]  # grouped by patient, in patient order
    series: tuple[Series, ...]  # grouped by study, in study order
    targets: Targets

    def instance_uid(self, series: Series, index: int) -> str:
        """SOP Instance UID of instance `index` (1-based) of `series`."""
        return f"{UID_ROOT}.3.{series.number}.{index}"

    # --- DICOM JSON as minipacs' extractor splits it (minipacs.index.extract) -----------

    def patient_json(self, p: Patient) -> dict[str, Any]:
        return {
            "00100010": _pn(p.name),
            "00100020": _v("LO", p.patient_id),
            "00100030": _v("DA", p.birth_date),
            "00100040": _v("CS", p.sex),
        }

    def study_json(self, s: Study) -> dict[str, Any]:
        return {
            "00080020": _v("DA", s.date),
            "00080030": _v("TM", s.time),
            "00080050": _v("SH", s.accession),
            "00080090": _pn(s.referring),
            "00081030": _v("LO", s.description),
            "00081060": _pn(*s.readers),
            "0020000D": _v("UI", s.uid),
            "00200010": _v("SH", s.study_id),
        }

    def series_json(self, se: Series) -> dict[str, Any]:
        return {
            "00080021": _v("DA", se.study.date),
            "00080031": _v("TM", se.study.time),
            "00080060": _v("CS", se.modality),
            "0008103E": _v("LO", se.description),
            "00081070": _pn(*se.operators),
            "00180015": _v("CS", se.study.body_part),
            "0020000E": _v("UI", se.uid),
            "00200011": {"vr": "IS", "Value": [se.series_number]},
        }

    def instance_json(self, se: Series, index: int) -> dict[str, Any]:
        return {
            "00080008": {"vr": "CS", "Value": list(IMAGE_TYPE)},
            "00080016": _v("UI", se.sop_class),
            "00080018": _v("UI", self.instance_uid(se, index)),
            "00080023": _v("DA", se.study.date),
            "00080033": _v("TM", se.study.time),
            "00200013": {"vr": "IS", "Value": [index]},
        }

    # --- the same instance as a Part 10 data set (pydicom) --------------------------------

    def dataset(self, se: Series, index: int) -> Dataset:
        """Instance `index` of `se` as a file data set: no pixel data, Explicit VR LE."""
        s, p = se.study, se.study.patient
        ds = Dataset()
        ds.ImageType = list(IMAGE_TYPE)
        ds.SOPClassUID = se.sop_class
        ds.SOPInstanceUID = self.instance_uid(se, index)
        ds.StudyDate = s.date
        ds.SeriesDate = s.date
        ds.ContentDate = s.date
        ds.StudyTime = s.time
        ds.SeriesTime = s.time
        ds.ContentTime = s.time
        ds.AccessionNumber = s.accession
        ds.Modality = se.modality
        ds.ReferringPhysicianName = s.referring
        ds.StudyDescription = s.description
        ds.SeriesDescription = se.description
        ds.NameOfPhysiciansReadingStudy = list(s.readers)
        ds.OperatorsName = list(se.operators)
        ds.PatientName = p.name
        ds.PatientID = p.patient_id
        ds.PatientBirthDate = p.birth_date
        ds.PatientSex = p.sex
        ds.BodyPartExamined = s.body_part
        ds.StudyInstanceUID = s.uid
        ds.SeriesInstanceUID = se.uid
        ds.StudyID = s.study_id
        ds.SeriesNumber = se.series_number
        ds.InstanceNumber = index
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = se.sop_class
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        return ds

    def iter_instances(self) -> Iterator[tuple[Series, int]]:
        """Every instance as (series, 1-based index), patient-major order."""
        for se in self.series:
            for index in range(1, se.instances + 1):
                yield se, index


def _v(vr: str, value: str) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]}


def _pn(*names: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": name} for name in names]}


def _quartered(total: int, rng: random.Random) -> list[int]:
    """`total` counts, a quarter each of 1, 2, 3 and 4, shuffled (sum = 2.5 x total)."""
    counts = [c for c in COUNTS for _ in range(total // len(COUNTS))]
    rng.shuffle(counts)
    return counts


def _days_outside_month() -> list[str]:
    days, day = [], FIRST_DAY
    while day <= LAST_DAY:
        text = day.strftime("%Y%m%d")
        if not MONTH_LOW <= text <= MONTH_HIGH:
            days.append(text)
        day += dt.timedelta(days=1)
    return days


def build(instances: int, seed: str = SEED) -> Population:
    """The population of `instances` instances (a multiple of 200, at least 1,000)."""
    if instances % UNIT or instances < 1000:
        raise ValueError(f"instances must be a multiple of {UNIT} and >= 1000, not {instances}")
    rng = random.Random(f"{seed}/{instances}")
    n_patients = instances // PATIENTS_PER
    smiths = set(rng.sample(range(n_patients), SMITHS))
    patients = []
    for i in range(n_patients):
        surname = "SMITH" if i in smiths else rng.choice(SURNAMES)
        birth = FIRST_DAY - dt.timedelta(days=rng.randrange(365 * 80))
        patients.append(Patient(
            number=i + 1, patient_id=f"PID{i + 1:07d}", name=f"{surname}^{rng.choice(GIVEN)}",
            birth_date=birth.strftime("%Y%m%d"), sex=rng.choice("MFO"),
        ))

    per_patient = _quartered(n_patients, rng)
    n_studies = sum(per_patient)
    assert n_studies * STUDIES_PER == instances
    in_month = set(rng.sample(range(n_studies), MONTH_STUDIES))
    days = _days_outside_month()
    month_days = [f"201903{d:02d}" for d in range(1, 32)]
    studies: list[Study] = []
    for p, count in zip(patients, per_patient, strict=True):
        for _ in range(count):
            k = len(studies)
            modality = rng.choices(_MODALITY_NAMES, _MODALITY_WEIGHTS)[0]
            body_part = rng.choice(MODALITIES[modality][2])
            studies.append(Study(
                number=k + 1, patient=p, uid=f"{UID_ROOT}.1.{k + 1}",
                date=rng.choice(month_days if k in in_month else days),
                time=f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}",
                accession=f"ACC{k + 1:09d}", study_id=str(k + 1),
                description=f"{modality} {body_part}", referring=rng.choice(STAFF),
                readers=(rng.choice(STAFF),), modality=modality, body_part=body_part,
            ))

    per_study = _quartered(n_studies, rng)
    series: list[Series] = []
    for s, count in zip(studies, per_study, strict=True):
        for j in range(1, count + 1):
            modality = "CT" if s.modality == "PT" and j % 2 == 0 else s.modality
            series.append(Series(
                number=len(series) + 1, study=s, series_number=j,
                uid=f"{UID_ROOT}.2.{len(series) + 1}", modality=modality,
                sop_class=MODALITIES[modality][1], description=f"{modality} series {j}",
                operators=(rng.choice(STAFF),), instances=INSTANCES_PER_SERIES,
            ))
    assert len(series) * INSTANCES_PER_SERIES == instances

    return Population(instances, seed, tuple(patients), tuple(studies), tuple(series),
                      _targets(patients, per_patient, studies, per_study))


def _targets(patients: list[Patient], per_patient: list[int], studies: list[Study],
             per_study: list[int]) -> Targets:
    """The first patient with 4 studies, the middle study, the first study with 4 series."""
    patient = patients[per_patient.index(max(COUNTS))]
    study = studies[len(studies) // 2]
    four = studies[per_study.index(max(COUNTS))]
    return Targets(
        patient_id=patient.patient_id, patient_id_studies=max(COUNTS),
        name_pattern="SMITH*", name_matches=SMITHS,
        date_range=f"{MONTH_LOW}-{MONTH_HIGH}", date_matches=MONTH_STUDIES,
        accession=study.accession, series_study_uid=four.uid, series_matches=max(COUNTS),
    )


def write_files(pop: Population, root: Path) -> list[Path]:
    """Every instance as a Part 10 file under `root`/<patient>/, in patient-major order."""
    paths = []
    for se, index in pop.iter_instances():
        folder = root / se.study.patient.patient_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{se.number}_{index}.dcm"
        dcmwrite(path, pop.dataset(se, index), enforce_file_format=True)
        paths.append(path)
    return paths
