"""`minipacs peers check`, `minipacs move` and `minipacs get` (SCU side of issue 5 §6-7).

The commands run as `python -m minipacs` subprocesses against an in-process minipacs server
populated by C-STORE (helpers of tests/interop/test_retrieve.py), with DCMTK storescp and
pynetdicom as move destinations.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from minipacs.cli import main
from minipacs.cli.retrieve import _RetrieveDisplay
from minipacs.config import Config
from minipacs.ports import FileMeta
from minipacs.proto.negotiation import MAX_PRESENTATION_CONTEXTS
from minipacs.proto.sop import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    STORAGE_SOP_CLASSES,
)
from minipacs.services.retrieve_scu import (
    DEFAULT_STORAGE_CLASSES,
    RetrieveProgress,
    get_contexts,
)
from minipacs.storage.folder import FolderWriter
from tests.interop.dicomfiles import dataset_bytes
from tests.interop.test_retrieve import (
    ROOT,
    SERVER_AE,
    Stored,
    instance,
    populate,
    received,
    retrieve_server,
    standard_data,
    study_uid,
)
from tests.support import (
    LOOPBACK,
    WAIT,
    assert_echo_works,
    free_port,
    make_config,
    minipacs_env,
    pynetdicom_ae,
    run_minipacs,
    running_server,
    storescp,
    write_config,
)

ECG: Final = "1.2.840.10008.5.1.4.1.1.9.1.1"  # 12-lead ECG Waveform: not in the default set
CT: Final = "1.2.840.10008.5.1.4.1.1.2"


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# --- contexts and files (in process) ------------------------------------------------------------


def test_get_contexts_fit_one_association_with_the_scp_role() -> None:
    contexts, roles = get_contexts()
    assert len(contexts) <= MAX_PRESENTATION_CONTEXTS - 1
    assert set(DEFAULT_STORAGE_CLASSES) <= set(STORAGE_SOP_CLASSES)
    assert all(len(syntaxes) == 1 for _, syntaxes in contexts)  # one syntax per context
    pairs = {(uid, syntaxes[0]) for uid, syntaxes in contexts}
    assert {(CT, ExplicitVRLittleEndian), (CT, ImplicitVRLittleEndian)} <= pairs
    assert {role.sop_class_uid for role in roles} == {uid for uid, _ in contexts}
    assert all(role.scp_role and not role.scu_role for role in roles)
    extra, _ = get_contexts([ECG, CT])
    assert len(extra) == len(contexts) + 2
    with pytest.raises(ValueError, match="give fewer --sop-class"):
        get_contexts([f"1.2.3.{n}" for n in range(20)])


def test_folder_writer_names_files_by_uid_and_refuses_others(tmp_path: Path) -> None:
    writer = FolderWriter(tmp_path / "a" / "b", implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                          implementation_version_name=IMPLEMENTATION_VERSION_NAME)
    writer.prepare()
    meta = FileMeta(CT, "1.2.3.4", ExplicitVRLittleEndian, "PEER", "ME")
    data = b"\x08\x00\x16\x00UI\x1a\x001.2.840.10008.5.1.4.1.1.2\x00"
    spool = writer.open_spool(meta)
    spool.write(data)
    stored = spool.commit()
    path = tmp_path / "a" / "b" / "1.2.3.4.dcm"
    assert stored.key == path.name and path.read_bytes()[stored.dataset_offset:] == data
    ds = dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert ds.file_meta.SourceApplicationEntityTitle == "ME"
    assert ds.SOPClassUID == CT
    for bad in ("../../etc/passwd", "1.2.x", "", "1." * 40):
        with pytest.raises(ValueError, match="not a valid SOP Instance UID"):
            writer.open_spool(FileMeta(CT, bad, ExplicitVRLittleEndian, "PEER", "ME"))
    discarded = writer.open_spool(FileMeta(CT, "1.2.5", ExplicitVRLittleEndian, "PEER", "ME"))
    discarded.write(data)
    discarded.discard()
    assert sorted(p.name for p in path.parent.iterdir()) == ["1.2.3.4.dcm"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_only_on_a_terminal() -> None:
    progress = RetrieveProgress(3, 2, 1, 0, 2, 2_000_000, 0.5)
    piped = io.StringIO()
    _RetrieveDisplay(piped, "C-GET")(progress)
    assert piped.getvalue() == ""
    terminal = _Terminal()
    display = _RetrieveDisplay(terminal, "C-GET")
    display(progress)
    display.clear()
    assert terminal.getvalue() == ("\r\x1b[KC-GET: 2 completed, 1 failed, 0 warning, 3 remaining; "
                                   "2 file(s), 2.0 MB\r\x1b[K")


# --- usage errors: one line, exit 2 ---------------------------------------------------------------


@pytest.mark.parametrize(("args", "fragment"), [
    (["move", LOOPBACK, "104", "-k", "StudyInstanceUID=1.2"], "--dest"),
    (["move", LOOPBACK, "104", "--dest", "X", "-k", "StudyInstanceUID"], "needs =VALUE"),
    (["move", LOOPBACK, "104", "--dest", "X", "-k", "PatientID=1"], "StudyInstanceUID="),
    (["move", LOOPBACK, "104", "--dest", "X", "--level", "series", "-k", "StudyInstanceUID=1"],
     "SeriesInstanceUID="),
    (["move", LOOPBACK, "70000", "--dest", "X", "-k", "StudyInstanceUID=1"], "out of range"),
    (["move", LOOPBACK, "104", "--dest", "X", "-k", "NoSuchKey=1"], "unknown attribute"),
    (["move", LOOPBACK, "104", "--dest", "X", "-k", "StudyInstanceUID=1",
      "-k", "StudyInstanceUID=2"], "-k StudyInstanceUID is given twice"),
    (["move", LOOPBACK, "104", "--dest", "X" * 17, "-k", "StudyInstanceUID=1"], "16"),
    (["move", LOOPBACK, "104", "--dest", "X", "--level", "patient", "-k", "PatientID=1"],
     "no PATIENT level"),
    (["get", LOOPBACK, "104", "-k", "StudyInstanceUID=1"], "--out"),
    (["get", LOOPBACK, "104", "-k", "StudyInstanceUID=1", "--out", "x", "--sop-class", "CT"],
     "is not a UID"),
])
def test_usage_errors_exit_2(args: list[str], fragment: str,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert fragment in one_error_line(captured.err)
    assert captured.out == ""


def test_get_out_that_is_a_file_exits_2(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["get", LOOPBACK, "104", "-k", "StudyInstanceUID=1",
                 "--out", str(tmp_path / "file" / "sub")]) == 2
    assert "--out: cannot create" in one_error_line(capsys.readouterr().err)


async def test_peers_check_usage_errors(tmp_path: Path) -> None:
    no_peers = write_config(tmp_path)
    result = await run_minipacs("peers", "check", "--config", str(no_peers))
    assert result.returncode == 2 and "no peers configured" in one_error_line(result.stderr)
    (tmp_path / "p").mkdir()
    some = write_config(tmp_path / "p", peers={"DEST": {"host": LOOPBACK, "port": 104}})
    result = await run_minipacs("peers", "check", "NOBODY", "--config", str(some))
    assert result.returncode == 2
    assert "'NOBODY' is not a configured peer (configured: DEST)" in one_error_line(result.stderr)
    result = await run_minipacs("peers", "check", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr


# --- peers check ----------------------------------------------------------------------------------


async def test_peers_check_reports_each_peer_in_words(tmp_path: Path) -> None:
    down = free_port()
    for name in ("picky", "client"):
        (tmp_path / name).mkdir()
    picky_config = _config(tmp_path / "picky", ae_title="PICKY",
                           security={"check_called_ae_title": True})
    async with running_server(_config(tmp_path, ae_title="GOOD")) as good, \
            running_server(picky_config) as picky:
        good_port = good.port
        config = write_config(tmp_path / "client", ae_title="CHECKER", peers={
            "GOOD": {"host": LOOPBACK, "port": good_port},
            "DOWN": {"host": LOOPBACK, "port": down},
            "WRONG": {"host": LOOPBACK, "port": picky.port},  # PICKY refuses other titles
        }, retrieve={"connect_timeout": 2.0})
        result = await run_minipacs("peers", "check", "--config", str(config))
        only = await run_minipacs("peers", "check", "GOOD", "--config", str(config), "--json")
    assert result.returncode == 1, result
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert set(lines) == {"GOOD", "DOWN", "WRONG"}
    assert f"{LOOPBACK}:{good_port}" in lines["GOOD"]
    assert " OK " in lines["GOOD"] and "association" in lines["GOOD"]
    assert "C-ECHO" in lines["GOOD"] and " ms" in lines["GOOD"]
    assert lines["DOWN"].endswith(f"FAILED  cannot connect to {LOOPBACK}:{down}: "
                                  "Connection refused")
    assert lines["WRONG"].endswith("FAILED  association rejected: permanent, service user, "
                                   "called AE title not recognized")
    assert only.returncode == 0, only
    (answer,) = [json.loads(line) for line in only.stdout.splitlines()]
    assert answer["ae_title"] == "GOOD" and answer["ok"] is True and answer["problem"] is None
    assert answer["associate_ms"] > 0 and answer["echo_ms"] > 0


async def test_storescp_answers_echo_but_not_move(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    async with storescp(tmp_path / "dest") as dest:
        config = write_config(tmp_path, peers={"STORESCP": {"host": LOOPBACK, "port": dest.port}})
        result = await run_minipacs("peers", "check", "--config", str(config))
        move = await run_minipacs("move", LOOPBACK, str(dest.port), "--dest", "X",
                                  "-k", "StudyInstanceUID=1.2")
    assert result.returncode == 0, result
    assert result.stdout.startswith("STORESCP") and " OK " in result.stdout
    assert move.returncode == 1
    assert one_error_line(move.stderr).endswith(
        "the peer did not accept Study Root Query/Retrieve Information Model - MOVE")


def _config(directory: Path, **sections: Any) -> Config:
    return make_config(directory, storage={"min_free_mb": 0}, **sections)


# --- move -----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def pacs(tmp_path: Path, peers: dict[str, int] | None = None
               ) -> AsyncIterator[tuple[int, dict[str, Stored]]]:
    async with retrieve_server(tmp_path / "pacs", peers) as server:
        yield server.port, await populate(server.port, standard_data())


async def minipacs_move(port: int, *args: str) -> tuple[int, str, str]:
    result = await run_minipacs("move", LOOPBACK, str(port), "--aec", SERVER_AE, *args)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout, result.stderr


async def test_move_to_storescp_arrives_byte_identical(tmp_path: Path) -> None:
    (tmp_path / "pacs").mkdir()
    (tmp_path / "dest").mkdir()
    async with storescp(tmp_path / "dest", "+B") as dest, \
            pacs(tmp_path, {"DEST": dest.port}) as (port, stored):
        code, out, err = await minipacs_move(port, "--dest", "DEST",
                                             "-k", f"StudyInstanceUID={study_uid(1)}")
        assert (code, err) == (0, ""), err
        (line,) = out.splitlines()  # no progress lines when not on a terminal
        assert line.startswith(f"C-MOVE {SERVER_AE}@{LOOPBACK}:{port} to DEST: 0x0000 Success: "
                               "5 completed, 0 failed, 0 warning in ")
        got = received(dest.directory)
        assert sorted(got) == sorted(u for u, s in stored.items() if s.study == study_uid(1))
        assert all(got[uid] == stored[uid].data for uid in got)
        # Patient Root, PATIENT level: both studies of RET-1, Implicit LE ones included.
        code, out, err = await minipacs_move(port, "--dest", "DEST", "--root", "patient",
                                             "--level", "PATIENT", "-k", "PatientID=RET-1")
        assert code == 0, err
        assert "7 completed, 0 failed" in out


async def test_move_refusals_and_failures_exit_1_in_words(tmp_path: Path) -> None:
    (tmp_path / "pacs").mkdir()
    async with pacs(tmp_path, {"DOWN": free_port()}) as (port, _):
        code, out, err = await minipacs_move(port, "--dest", "NOBODY",
                                             "-k", f"StudyInstanceUID={study_uid(1)}")
        assert (code, out) == (1, "")
        assert "0xA801 Move destination unknown (unknown move destination 'NOBODY')" \
            in one_error_line(err)
        code, out, err = await minipacs_move(port, "--dest", "DOWN", "--level", "SERIES",
                                             "-k", f"StudyInstanceUID={study_uid(1)}",
                                             "-k", f"SeriesInstanceUID={ROOT}.1.1\\{ROOT}.1.2")
        line = one_error_line(err)
        assert code == 1
        assert "0xA702 Out of resources: unable to perform sub-operations" in line
        assert "0 completed, 5 failed, 0 warning" in line
        assert "failed SOP instances (5): " in line and line.count(ROOT) == 5
        code, out, err = await minipacs_move(port, "--dest", "DOWN", "-k",
                                             "StudyInstanceUID=1.2.3.999")
        assert code == 0 and "0 completed, 0 failed" in out, err
        assert out.rstrip().endswith("(nothing matched the keys)")
    code, out, err = await minipacs_move(free_port(), "--dest", "X", "-k", "StudyInstanceUID=1")
    assert code == 1 and "cannot connect" in one_error_line(err)


@contextlib.contextmanager
def slow_destination(port: int) -> Iterator[tuple[threading.Event, threading.Event]]:
    """A pynetdicom storage SCP whose first C-STORE waits until `release` is set."""
    from pynetdicom import evt

    arrived, release = threading.Event(), threading.Event()
    ae = pynetdicom_ae("SLOW")
    ae.add_supported_context(CT, [ExplicitVRLittleEndian])

    def on_store(event: Any) -> int:
        if not arrived.is_set():
            arrived.set()
            release.wait(WAIT)
        return 0x0000

    scp = ae.start_server((LOOPBACK, port), block=False,
                          evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield arrived, release
    finally:
        release.set()
        scp.shutdown()


async def _interrupt(presses: int, tmp_path: Path) -> tuple[int, str, str]:
    """A move of 8 instances, Ctrl-C'd `presses` times while the first sub-operation waits."""
    dest_port = free_port()
    with slow_destination(dest_port) as (arrived, release):
        async with retrieve_server(tmp_path / "pacs", {"SLOW": dest_port}) as server:
            await populate(server.port, [(instance("CAN", 8, 1, n), ExplicitVRLittleEndian)
                                         for n in range(8)])
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "minipacs", "move", LOOPBACK, str(server.port),
                "--aec", SERVER_AE, "--dest", "SLOW", "-k", f"StudyInstanceUID={study_uid(8)}",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL, env=minipacs_env())
            try:
                assert await asyncio.to_thread(arrived.wait, WAIT)
                assert proc.stderr is not None and proc.stdout is not None
                proc.send_signal(signal.SIGINT)
                async with asyncio.timeout(WAIT):
                    notice = (await proc.stderr.readline()).decode()
                if presses > 1:
                    proc.send_signal(signal.SIGINT)
                    async with asyncio.timeout(WAIT):
                        await proc.wait()
                release.set()
                async with asyncio.timeout(WAIT):
                    out, err = await proc.communicate()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            await assert_echo_works(server.port)  # the server is fine afterwards
            assert proc.returncode is not None
            return proc.returncode, out.decode(), notice + err.decode()


async def test_ctrl_c_sends_c_cancel_and_waits_for_the_final_response(tmp_path: Path) -> None:
    (tmp_path / "pacs").mkdir()
    code, out, err = await _interrupt(1, tmp_path)
    assert code == 1, err
    assert out == ""
    notice, summary = err.strip().splitlines()
    assert notice.startswith("interrupted: C-CANCEL sent, waiting for the final C-MOVE response")
    assert "0xFE00 Sub-operations terminated due to cancel" in summary
    assert "1 completed, 0 failed, 0 warning, 7 remaining" in summary


async def test_second_ctrl_c_aborts(tmp_path: Path) -> None:
    (tmp_path / "pacs").mkdir()
    code, _, err = await _interrupt(2, tmp_path)
    assert code == 130, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("interrupted: C-CANCEL sent")
    assert lines[1] == "interrupted again: aborting the association"
    assert "association lost" in lines[2]


# --- get ------------------------------------------------------------------------------------------


def server_files(root: Path) -> dict[str, bytes]:
    """SOP Instance UID → data-set bytes of the files in a minipacs store."""
    out = {}
    for path in root.rglob("*.dcm"):
        if ".spool" not in path.parts:
            out[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = dataset_bytes(path)
    return out


async def minipacs_get(port: int, out: Path, *args: str) -> tuple[int, str, str]:
    result = await run_minipacs("get", LOOPBACK, str(port), "--aec", SERVER_AE,
                                "--out", str(out), *args)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout, result.stderr


async def test_get_writes_byte_identical_part10_files(tmp_path: Path) -> None:
    (tmp_path / "pacs").mkdir()
    out = tmp_path / "new" / "folder"
    async with pacs(tmp_path) as (port, stored):
        code, stdout, err = await minipacs_get(port, out, "--root", "patient",
                                               "--level", "PATIENT", "-k", "PatientID=RET-1")
    assert (code, err) == (0, ""), err
    (line,) = stdout.splitlines()
    assert "0x0000 Success: 7 completed, 0 failed, 0 warning" in line
    assert f"7 file(s) written to {out}" in line and "MB/s" in line
    expected = sorted(u for u, s in stored.items() if s.study != study_uid(3))
    assert sorted(p.name for p in out.iterdir()) == [f"{uid}.dcm" for uid in expected]
    archive = server_files(tmp_path / "pacs" / "store")
    for uid in expected:
        path = out / f"{uid}.dcm"
        assert dataset_bytes(path) == archive[uid] == stored[uid].data, uid
        meta = dcmread(path, stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == stored[uid].transfer_syntax  # Implicit ones too
        assert meta.MediaStorageSOPClassUID == stored[uid].sop_class
        assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID


async def test_get_needs_sop_class_for_unusual_classes(tmp_path: Path) -> None:
    (tmp_path / "pacs").mkdir()
    async with retrieve_server(tmp_path / "pacs") as server:
        await populate(server.port, [(instance("ECG", 9, 1, 1, sop_class=ECG),
                                      ExplicitVRLittleEndian)])
        key = f"StudyInstanceUID={study_uid(9)}"
        code, out, err = await minipacs_get(server.port, tmp_path / "a", "-k", key)
        assert (code, out) == (1, "")
        line = one_error_line(err)
        assert "0xA702" in line and "0 completed, 1 failed" in line
        assert f"failed SOP instances (1): {ROOT}.9.1.1" in line
        code, out, err = await minipacs_get(server.port, tmp_path / "b", "-k", key,
                                            "--sop-class", ECG)
        assert code == 0, err
        assert [p.name for p in (tmp_path / "b").iterdir()] == [f"{ROOT}.9.1.1.dcm"]


async def test_get_write_failure_is_answered_and_counted(tmp_path: Path) -> None:
    (tmp_path / "pacs").mkdir()
    out = tmp_path / "out"
    (out / f"{ROOT}.1.1.2.dcm").mkdir(parents=True)  # a folder where one file should go
    async with pacs(tmp_path) as (port, _):
        code, stdout, err = await minipacs_get(port, out, "--level", "SERIES",
                                               "-k", f"StudyInstanceUID={study_uid(1)}",
                                               "-k", f"SeriesInstanceUID={ROOT}.1.1")
    line = one_error_line(err)
    assert code == 1 and stdout == ""
    assert "0xB000 Sub-operations complete with failures" in line
    assert "2 completed, 1 failed" in line and f"({ROOT}.1.1.2)" not in line
    assert "2 file(s) written" in line and "1 could not be written" in line
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        f"{ROOT}.1.1.1.dcm", f"{ROOT}.1.1.3.dcm"]
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
