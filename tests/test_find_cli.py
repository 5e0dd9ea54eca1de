"""`minipacs find`: keys as DCMTK findscu takes them, table and JSON output, exit codes.

Against the whole server in this process (populated by C-STORE, as in the interop tests);
the command itself runs as `python -m minipacs` in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import pytest

from minipacs.cli.common import display_width
from minipacs.ports import QueryLevel
from minipacs.proto.sop import STUDY_ROOT_QR_FIND
from minipacs.services.find_scu import (
    MAX_ANSWER_BYTES,
    FindKey,
    build_identifier,
    check_level,
    decode_answer,
    default_keys,
    parse_key,
)
from tests.interop.test_find import JAPANESE, SERVER_AE, population, server, store_all
from tests.support import LOOPBACK, free_port, run_minipacs

EXPLICIT_LE: Final = "1.2.840.10008.1.2.1"
TAG_PATIENT_NAME: Final = 0x00100010


# --- keys and identifiers (in process) ---------------------------------------------------------


@pytest.mark.parametrize(("spec", "expected"), [
    ("PatientName=SMITH*", FindKey(TAG_PATIENT_NAME, "SMITH*")),
    ("0010,0010=SMITH*", FindKey(TAG_PATIENT_NAME, "SMITH*")),
    ("(0010,0010)", FindKey(TAG_PATIENT_NAME, None)),
    ("PatientName", FindKey(TAG_PATIENT_NAME, None)),
    ("PatientName=", FindKey(TAG_PATIENT_NAME, "")),
    ("PatientName=Yamada=山田", FindKey(TAG_PATIENT_NAME, "Yamada=山田")),
    ("StudyDate=20240101-", FindKey(0x00080020, "20240101-")),
])
def test_keys_are_read_like_findscu(spec: str, expected: FindKey) -> None:
    assert parse_key(spec) == expected


@pytest.mark.parametrize(("spec", "fragment"), [
    ("NoSuchKeyword=1", "unknown attribute"),
    ("0009,1001=x", "only public dictionary tags"),
    ("QueryRetrieveLevel=STUDY", "--level"),
    ("SpecificCharacterSet=ISO_IR 100", "chosen from the values"),
])
def test_bad_keys_are_refused(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_key(spec)


def test_study_root_has_no_patient_level() -> None:
    check_level("patient", "PATIENT")
    with pytest.raises(ValueError, match="no PATIENT level"):
        check_level("study", "PATIENT")


def test_identifier_holds_level_keys_and_utf8_when_needed() -> None:
    keys = [parse_key("PatientName=Müller*"), parse_key("StudyInstanceUID=1.2\\1.3"),
            parse_key("StudyDate"), parse_key("ProcedureCodeSequence")]
    ds = decode_answer(build_identifier(QueryLevel.STUDY, keys, EXPLICIT_LE), EXPLICIT_LE)
    assert ds.QueryRetrieveLevel == "STUDY"
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.PatientName == "Müller*"
    assert list(ds.StudyInstanceUID) == ["1.2", "1.3"]
    assert ds["StudyDate"].is_empty
    assert ds.ProcedureCodeSequence == []
    ascii_only = build_identifier(QueryLevel.STUDY, [parse_key("PatientName=X*")], EXPLICIT_LE)
    assert "SpecificCharacterSet" not in decode_answer(ascii_only, EXPLICIT_LE)


def test_default_keys_are_the_level_keys() -> None:
    assert [key.keyword for key in default_keys("SERIES")] == [
        "Modality", "SeriesNumber", "SeriesDescription", "SeriesInstanceUID"]


# --- usage errors (no server) -----------------------------------------------------------------


@pytest.mark.parametrize(("args", "fragment"), [
    (["-k", "NoSuchKeyword=1"], "unknown attribute"),
    (["--level", "WORKLIST"], "invalid choice"),
    (["--root", "study", "--level", "patient"], "no PATIENT level"),
    (["--root", "worklist"], "invalid choice"),
    # A key given twice would silently replace the first: refused, the list syntax named.
    (["-k", "PatientName=A*", "-k", "PatientName=B*"], "-k PatientName is given twice"),
    (["-k", "PatientID", "-k", "0010,0020=X"], "-k PatientID is given twice"),
])
async def test_usage_errors_exit_2(args: list[str], fragment: str) -> None:
    result = await run_minipacs("find", LOOPBACK, "104", *args)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


async def test_unreachable_peer_exits_1() -> None:
    result = await run_minipacs("find", LOOPBACK, str(free_port()), "--timeout", "5")
    assert result.returncode == 1
    assert "cannot connect" in result.stderr
    assert result.stdout == ""


# --- against the server -------------------------------------------------------------------------


@pytest.fixture
async def pacs(tmp_path: Path) -> AsyncIterator[int]:
    async with server(tmp_path) as port:
        await asyncio.to_thread(store_all, port, population())
        yield port


async def find(port: int, *args: str) -> tuple[int, list[str], str]:
    result = await run_minipacs("find", LOOPBACK, str(port), "--aec", SERVER_AE, *args)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout.splitlines(), result.stderr


async def test_table_has_a_column_per_requested_key(pacs: int) -> None:
    code, lines, err = await find(pacs, "-k", "PatientName=doe*", "-k", "StudyDate",
                                  "-k", "AccessionNumber")
    assert code == 0, err
    header, rule, *rows = lines
    assert header.split() == ["PatientName", "StudyDate", "AccessionNumber"]
    assert set(rule) <= {"-", " "}
    assert sorted(row.split() for row in rows) == [["Doe^John", "20240105", "ACC1"],
                                                   ["Doe^John", "20240220", "ACC2"]]
    assert "2 matches" in err


async def test_table_aligns_wide_characters(pacs: int) -> None:
    """A CJK character takes two terminal columns: the next column starts at the same
    display position on every line (UAX #11 East Asian Width)."""
    code, lines, err = await find(pacs, "-k", "PatientName", "-k", "PatientID",
                                  "-k", "StudyDate")
    assert code == 0, err
    assert any("山田" in line for line in lines)
    starts = {display_width(line[:line.index("P", line.index("  "))]) for line in lines
              if not set(line) <= {"-", " "}}
    assert len(starts) == 1, lines  # where PatientID (header) and each PID-... value start
    rule = lines[1].split("  ")
    assert len(rule[0]) == max(display_width(line[:line.index("  ")]) for line in lines)


async def test_json_lines_carry_every_character(pacs: int) -> None:
    code, lines, err = await find(pacs, "--json", "-k", "PatientID=PID-4", "-k", "PatientName",
                                  "-k", "StudyInstanceUID")
    assert code == 0, err
    (line,) = lines
    answer = json.loads(line)
    name = answer["00100010"]["Value"][0]
    assert "=".join([name["Alphabetic"], name["Ideographic"], name["Phonetic"]]) == JAPANESE
    assert answer["00080052"]["Value"] == ["STUDY"]


async def test_utf8_value_finds_a_latin1_patient(pacs: int) -> None:
    code, lines, err = await find(pacs, "-k", "PatientName=Müll*", "-k", "PatientID")
    assert code == 0, err
    assert [row.split() for row in lines[2:]] == [["Müller^Jürgen", "PID-2"]]


async def test_patient_root_levels_and_default_keys(pacs: int) -> None:
    code, lines, err = await find(pacs, "--root", "patient", "--level", "patient",
                                  "-k", "PatientID=PID-1")
    assert code == 0, err
    assert [row.split() for row in lines[2:]] == [["PID-1"]]
    code, lines, err = await find(pacs, "--level", "series", "-k", "StudyInstanceUID=1")
    assert code == 0 and lines == [] and "0 matches" in err
    code, lines, err = await find(pacs)  # no keys: the study level's required keys
    assert code == 0, err
    assert lines[0].split()[:3] == ["StudyDate", "StudyTime", "AccessionNumber"]
    assert len(lines) == 2 + 6


async def test_failure_status_exits_1_with_the_comment(pacs: int) -> None:
    code, lines, err = await find(pacs, "--level", "STUDY", "-k", "StudyDate=2024-13-01")
    assert code == 1
    assert lines == []
    assert "0xA900" in err and "StudyDate" in err


# --- a peer's Deflated answer past the inflate bound ------------------------------------------


def deflated_find_scp(answer_bytes: int) -> tuple[Any, int]:
    """A pynetdicom Study Root FIND SCP accepting only Deflated Explicit VR LE; its one
    answer holds an OB value of `answer_bytes` zeros (a few KiB once deflated)."""
    from pydicom.dataset import Dataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian
    from pynetdicom import AE, evt

    def handle(event: Any) -> Any:
        answer = Dataset()
        answer.QueryRetrieveLevel = "STUDY"
        answer.StudyInstanceUID = "1.2.3"
        answer.EncapsulatedDocument = bytes(answer_bytes)
        yield 0xFF00, answer

    ae = AE(ae_title="DEFLATING")
    ae.add_supported_context(STUDY_ROOT_QR_FIND, DeflatedExplicitVRLittleEndian)
    port = free_port()
    server = ae.start_server((LOOPBACK, port), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, handle)])
    return server, port


@pytest.mark.parametrize(("size", "ok"), [(MAX_ANSWER_BYTES + (1 << 20), False), (1 << 20, True)],
                         ids=["past-the-bound", "within"])
def test_deflated_answer_past_the_bound_is_an_error_not_cut(size: int, ok: bool) -> None:
    from minipacs.app.scu import find as app_find

    server, port = deflated_find_scp(size)
    answers: list[Any] = []
    try:
        summary = app_find(LOOPBACK, port, [parse_key("StudyInstanceUID")], level="STUDY",
                           root="study", calling_ae="FINDSCU", called_ae="DEFLATING", timeout=10.0,
                           max_pdu=262144, on_answer=answers.append)
    finally:
        server.shutdown()
    assert summary.ok is ok, summary
    if ok:
        assert len(answers[0].EncapsulatedDocument) == size
    else:
        assert f"inflates past {MAX_ANSWER_BYTES} bytes" in summary.message, summary
        assert answers == []
