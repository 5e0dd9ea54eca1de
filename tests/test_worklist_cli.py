"""`minipacs worklist add|list|remove` in process, on a real SQLite file in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from minipacs.cli import main
from minipacs.index.engine import make_engine
from minipacs.index.worklist import SqlWorklist
from tests.support import write_config

STUDY = "1.2.826.0.1.3680043.8.498.78.1"


def item(name: str = "Doe^Jane", *steps: tuple[str, str, str]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = name
    ds.PatientID = "PID-1"
    ds.AccessionNumber = "ACC1"
    ds.StudyInstanceUID = STUDY
    sequence = []
    for modality, date, sps_id in steps or (("CT", "20260105", "SPS1"),):
        one = Dataset()
        one.Modality = modality
        one.ScheduledStationAETitle = f"{modality}1"
        one.ScheduledProcedureStepStartDate = date
        one.ScheduledProcedureStepStartTime = "0930"
        one.ScheduledProcedureStepID = sps_id
        one.ScheduledProcedureStepStatus = "SCHEDULED"
        sequence.append(one)
    ds.ScheduledProcedureStepSequence = sequence
    return ds


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = write_config(tmp_path)
    assert main(["db", "upgrade", "--config", str(path)]) == 0
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def stored(config: Path) -> list[Any]:
    url = f"sqlite:///{config.parent / 'index.db'}"
    engine = make_engine(url)
    try:
        return SqlWorklist(engine).list_steps()
    finally:
        engine.dispose()


def test_add_json_list_and_part10_then_list_and_remove(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    two = item("Doe^Jane", ("CT", "20260105", "SPS1"), ("MR", "20260106", "SPS2"))
    listed = write_json(tmp_path / "items.json",
                        [two.to_json_dict(), item("Roe^Ric", ("US", "20260101", "SPS3"))
                         .to_json_dict()])
    wl = item("Müller^Jürgen", ("XA", "20260102", "SPS4"))
    wl.file_meta = FileMetaDataset()
    wl.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
    wl.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    wl.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    wl.save_as(tmp_path / "one.wl", enforce_file_format=True)
    code, out, err = run(capsys, "worklist", "add", str(listed), str(tmp_path / "one.wl"),
                         "--config", str(config))
    assert (code, err) == (0, "")
    assert "items.json: added 3 steps (ID 1, 2, 3)" in out
    assert "one.wl: added 1 step (ID 4)" in out

    code, out, _ = run(capsys, "worklist", "list", "--config", str(config))
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ID", "DATE", "TIME", "MODALITY", "STATION",
                                              "PATIENT", "ACCESSION", "STATUS"]
    assert [line.split()[0] for line in lines[1:]] == ["3", "4", "1", "2"]  # by start date
    assert lines[2].split() == ["4", "20260102", "093000", "XA", "XA1", "Müller^Jürgen",
                                "(PID-1)", "ACC1", "SCHEDULED"]
    code, out, _ = run(capsys, "worklist", "list", "--json", "--config", str(config))
    rows = [json.loads(line) for line in out.splitlines()]
    assert {row["sps_id"]: row["modality"] for row in rows} == {
        "SPS1": "CT", "SPS2": "MR", "SPS3": "US", "SPS4": "XA"}

    code, out, err = run(capsys, "worklist", "remove", "2", "4", "--config", str(config))
    assert (code, out.strip(), err) == (0, "removed 2 steps", "")
    assert sorted(step.sps_id for step in stored(config)) == ["SPS1", "SPS3"]


def test_remove_unknown_id_removes_nothing(config: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write_json(tmp_path / "one.json", item().to_json_dict())
    assert run(capsys, "worklist", "add", str(path), "--config", str(config))[0] == 0
    code, out, err = run(capsys, "worklist", "remove", "1", "7", "--config", str(config))
    assert code == 1 and out == ""
    assert err.strip() == "minipacs worklist remove: no worklist step 7 (nothing removed)"
    assert len(stored(config)) == 1
    code, _, err = run(capsys, "worklist", "remove", "abc", "--config", str(config))
    assert code == 2 and "not a step ID: 'abc'" in err


def _no_steps(ds: Dataset) -> None:
    del ds.ScheduledProcedureStepSequence


def _no_patient(ds: Dataset) -> None:
    del ds.PatientName
    del ds.PatientID


def _no_modality(ds: Dataset) -> None:
    del ds.ScheduledProcedureStepSequence[0].Modality


def _bad_date(ds: Dataset) -> None:
    ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate = "tomorrow"


@pytest.mark.parametrize(("change", "message"), [
    (_no_steps, "needs a ScheduledProcedureStepSequence"),
    (_no_patient, "needs PatientName (0010,0010) or PatientID"),
    (_no_modality, "step 1 has no Modality"),
    (_bad_date, "start date 'tomorrow' is not a DICOM date"),
])
def test_items_missing_required_keys_are_refused(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any,
        message: str) -> None:
    bad = item()
    change(bad)
    good = write_json(tmp_path / "good.json", item().to_json_dict())
    path = write_json(tmp_path / "bad.json", bad.to_json_dict())
    code, out, err = run(capsys, "worklist", "add", str(good), str(path), "--config",
                         str(config))
    assert code == 2 and out == ""
    assert err.startswith(f"minipacs worklist add: {path}: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert stored(config) == []  # the good file was not added either


@pytest.mark.parametrize(("content", "message"), [
    (b"{not json", "not valid JSON"),
    (b'[{"00100010": {"vr": "XX", "Value": ["a"]}}]', "item 1 is not DICOM JSON"),
    (b"[1]", "item 1 is not a JSON object"),
    (b"[]", "no worklist item"),
    (b"\x00\x01garbage" * 10, "needs PatientName"),  # read as a data set of no use
])
def test_bad_files_are_refused(config: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str], content: bytes,
                               message: str) -> None:
    path = tmp_path / "bad.wl"
    path.write_bytes(content)
    code, _, err = run(capsys, "worklist", "add", str(path), "--config", str(config))
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_missing_file_and_missing_database(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)  # no db upgrade: no index database yet
    code, _, err = run(capsys, "worklist", "add", str(tmp_path / "nope.json"), "--config",
                       str(config))
    assert code == 2 and "nope.json: No such file" in err
    code, _, err = run(capsys, "worklist", "list", "--config", str(config))
    assert code == 1 and "minipacs db upgrade creates it" in err
