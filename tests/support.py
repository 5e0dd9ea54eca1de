"""Helpers for the loopback tests (tests/net, tests/interop): servers, peers, processes, data.

Every wait here is bounded and every process started here is killed on the way out. DCMTK
tools run by absolute path (pynetdicom installs same-named scripts that shadow them on PATH)
with TCP_NODELAY=1 (Debian's DCMTK leaves Nagle's algorithm on, which costs 40 ms per PDU).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage

from minipacs.app.daemon import open_server
from minipacs.app.scu import _echo
from minipacs.config import Config, load_config
from minipacs.net.server import Server
from minipacs.proto.framer import decode_pdu
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.pdu import Pdu
from minipacs.proto.pdu_codec import encode_pdu
from minipacs.proto.sop import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION
from minipacs.proto.status import Status

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
DCMTK_BIN = Path("/usr/bin")
ECHOSCU = str(DCMTK_BIN / "echoscu")
STORESCP = str(DCMTK_BIN / "storescp")
# Upper bound for anything that should happen promptly; a test that hits it has failed.
WAIT = 10.0
# The `limits:` of in-process servers: timers short enough to observe, nothing else tight.
TEST_LIMITS: dict[str, Any] = {"artim_timeout": 1.0, "idle_timeout": 5.0}
# A-ABORT as our server sends it: type 07, reserved, length 4, reserved x2, source 2 (provider).
ABORT_PREFIX = bytes([0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x02])
ABORT_LENGTH = 10
PDU_HEADER = struct.Struct(">BBI")  # PDU type, reserved, PDU length (PS3.8 §9.3.1)
PROMPT = 0.5  # an answer that needs no timer arrives well within this (asserted where it matters)


# --- environment ---------------------------------------------------------------------------


def dcmtk_env() -> dict[str, str]:
    """The environment for a DCMTK process: ours plus TCP_NODELAY=1."""
    return {**os.environ, "TCP_NODELAY": "1"}


def minipacs_env() -> dict[str, str]:
    """The environment for `python -m minipacs`: this checkout first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def check_dcmtk() -> str:
    """Fail (never skip) unless /usr/bin/echoscu is DCMTK's; returns its version line."""
    try:
        result = subprocess.run([ECHOSCU, "--version"], capture_output=True, text=True,
                                timeout=WAIT, env=dcmtk_env(), check=False)
    except FileNotFoundError:
        pytest.fail(f"DCMTK is required for these tests: {ECHOSCU} not found "
                    "(apt-get install dcmtk)", pytrace=False)
    output = result.stdout + result.stderr
    if "dcmtk" not in output.lower():
        pytest.fail(f"{ECHOSCU} is not DCMTK's echoscu: {output[:200]!r}", pytrace=False)
    return output.splitlines()[0]


def free_port() -> int:
    """A TCP port that was free a moment ago (for peers that cannot listen on port 0)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# --- configuration and the in-process server -------------------------------------------------


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# Tests that are not about permissions let every caller do everything, as before issue 12
# (a config file now defaults to unknown_aes: [echo, store] and no anonymous HTTP); the
# defaults themselves are tested in tests/interop/test_permissions.py and tests/web.
OPEN_SECURITY: dict[str, Any] = {"unknown_aes": ["all"], "http_anonymous": ["all"]}


def write_config(directory: Path, **sections: Any) -> Path:
    """A YAML config listening on 127.0.0.1:0 with its data under `directory`.

    Every caller may do everything (OPEN_SECURITY) unless `security` says otherwise.
    """
    data = _merge({
        "listen": {"host": LOOPBACK, "port": 0},
        "storage": {"root": str(directory / "store"), "fsync": False},
        "database": {"url": f"sqlite+aiosqlite:///{directory / 'index.db'}"},
        "security": OPEN_SECURITY,
    }, sections)
    path = directory / "minipacs.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def make_config(directory: Path, **sections: Any) -> Config:
    return load_config(write_config(directory, **sections))


@contextlib.asynccontextmanager
async def running_server(config: Config) -> AsyncIterator[Server]:
    """The whole server (store, index, services) on 127.0.0.1, ephemeral port, in this loop."""
    async with asyncio.timeout(WAIT):
        server_cm = open_server(config)
        server = await server_cm.__aenter__()
    try:
        yield server
    finally:
        async with asyncio.timeout(WAIT):
            await server_cm.__aexit__(None, None, None)


ServerFactory = Callable[..., Awaitable[Server]]


@contextlib.asynccontextmanager
async def server_factory(directory: Path) -> AsyncIterator[ServerFactory]:
    """`await start(**config sections)` starts a server, stopped when the block ends.

    Each server gets its own folder; `limits` default to TEST_LIMITS (short timers).
    """
    async with contextlib.AsyncExitStack() as stack:
        count = itertools.count(1)

        async def start(**sections: Any) -> Server:
            here = directory / f"server{next(count)}"
            here.mkdir()
            config = make_config(here, **_merge({"limits": TEST_LIMITS}, sections))
            return await stack.enter_async_context(running_server(config))

        yield start


async def assert_echo_works(port: int, *, timeout: float = 5.0) -> float:
    """A fresh C-ECHO through minipacs' own SCU succeeds; returns its duration in seconds."""
    started = time.perf_counter()
    ok, message = await _echo(LOOPBACK, port, "PROBE", "ANY-SCP", timeout, 16384)
    assert ok, message
    return time.perf_counter() - started


class AssociationLog(logging.Handler):
    """Collects `minipacs.association` records and lets a test await them (no polling)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._changed: asyncio.Event | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self._changed is not None:
            self._changed.set()

    @property
    def lines(self) -> list[str]:
        return [r.getMessage() for r in self.records]

    async def wait_for(self, count: int, timeout: float = WAIT) -> list[str]:
        """Wait until at least `count` association lines were logged."""
        self._changed = asyncio.Event()
        async with asyncio.timeout(timeout):
            while len(self.records) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.lines


HandlerT = TypeVar("HandlerT", bound=logging.Handler)


@contextlib.contextmanager
def attached(handler: HandlerT, logger_name: str, level: int = logging.INFO
             ) -> Iterator[HandlerT]:
    """`handler` receives what `logger_name` logs at `level` and above, while in the block."""
    logger = logging.getLogger(logger_name)
    old_level = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def association_log() -> contextlib.AbstractContextManager[AssociationLog]:
    return attached(AssociationLog(), "minipacs.association")


# --- processes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcResult:
    returncode: int
    stdout: str
    stderr: str


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def run_process(argv: Sequence[str], env: dict[str, str], timeout: float = WAIT
                      ) -> ProcResult:
    """Run a process to completion without blocking the event loop; killed on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        await _stop(proc)
    assert proc.returncode is not None
    return ProcResult(proc.returncode, out.decode(errors="replace"),
                      err.decode(errors="replace"))


async def run_dcmtk(tool: str, *args: str, timeout: float = WAIT) -> ProcResult:
    return await run_process([str(DCMTK_BIN / tool), *args], dcmtk_env(), timeout)


async def run_minipacs(*args: str, timeout: float = WAIT) -> ProcResult:
    return await run_process([sys.executable, "-m", "minipacs", *args], minipacs_env(),
                             timeout)


async def wait_for_port(port: int, proc: asyncio.subprocess.Process | None = None,
                        timeout: float = WAIT) -> None:
    """Wait until 127.0.0.1:port accepts (for peers that do not say when they listen)."""
    async with asyncio.timeout(timeout):
        while True:
            if proc is not None and proc.returncode is not None:
                pytest.fail(f"process exited with {proc.returncode} before listening")
            try:
                _, writer = await asyncio.open_connection(LOOPBACK, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


@dataclass(frozen=True, slots=True)
class StoreSCP:
    port: int
    directory: Path
    log: Path


@contextlib.asynccontextmanager
async def storescp(directory: Path, *options: str) -> AsyncIterator[StoreSCP]:
    """DCMTK storescp on a free port writing to `directory`; its output goes to a log file."""
    port = free_port()
    out = directory / "received"
    out.mkdir()
    log = directory / "storescp.log"
    with log.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            STORESCP, *options, "-od", str(out), str(port), stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file, stderr=subprocess.STDOUT, env=dcmtk_env())
    try:
        await wait_for_port(port, proc)
        yield StoreSCP(port, out, log)
    finally:
        await _stop(proc)


class ServeProcess:
    """`python -m minipacs serve --config FILE` as a subprocess, its stderr collected by a thread.

    The config listens on port 0; the port is read from the "listening on" log line, which
    also tells us the server is ready (no connection probes that would show up in its log).
    """

    LISTENING = re.compile(r"listening on [^ ]+:(\d+)")

    def __init__(self, config: Path, *args: str, command: Sequence[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        """`command` runs minipacs (default: this checkout's); `args` follow the config."""
        minipacs = [sys.executable, "-m", "minipacs"] if command is None else list(command)
        self.proc = subprocess.Popen(
            [*minipacs, "serve", "--config", str(config), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=minipacs_env() if env is None else env, text=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The first log line matching `pattern`, waiting for it (bounded)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self._reader.is_alive() and self.proc.poll() is not None):
                    pytest.fail(f"no log line matching {pattern!r}; log:\n" + "\n".join(self.lines))
                self._changed.wait(remaining)

    def start(self, timeout: float = WAIT) -> ServeProcess:
        self.port = int(self.wait_for_line(self.LISTENING.pattern, timeout)[1])
        return self

    def signal(self, signum: signal.Signals = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = WAIT) -> int:
        """The exit code; fails the test (the process is killed later) if it does not exit."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"minipacs serve did not exit within {timeout:g} s; log:\n{self.log}")
        self._reader.join(WAIT)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        self._reader.join(WAIT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@contextlib.contextmanager
def serve_process(directory: Path, **sections: Any) -> Iterator[ServeProcess]:
    """`minipacs serve` running on a config written to `directory`; killed at the end."""
    process = ServeProcess(write_config(directory, **sections))
    try:
        yield process.start()
    finally:
        process.stop()


# --- raw sockets (speaking PDUs by hand) ------------------------------------------------------


def associate_rq(calling: str = "RAW") -> bytes:
    """An encoded A-ASSOCIATE-RQ proposing Verification in Implicit VR Little Endian."""
    rq = build_associate_rq(calling, "ANY-SCP", [(VERIFICATION, [IMPLICIT_VR_LITTLE_ENDIAN])])
    return encode_pdu(rq)


@contextlib.asynccontextmanager
async def raw_connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader,
                                                             asyncio.StreamWriter]]:
    async with asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader, timeout: float = WAIT) -> bytes:
    """What the server sends before closing, up to one A-ABORT's length (bounded wait)."""
    data = b""
    async with asyncio.timeout(timeout):
        while len(data) < ABORT_LENGTH:
            chunk = await reader.read(ABORT_LENGTH - len(data))
            if not chunk:
                break
            data += chunk
    return data


async def read_pdu(reader: asyncio.StreamReader, timeout: float = WAIT) -> Pdu:
    """One whole PDU from the stream, decoded (bounded wait)."""
    async with asyncio.timeout(timeout):
        header = await reader.readexactly(PDU_HEADER.size)
        body = await reader.readexactly(PDU_HEADER.unpack(header)[2])
    return decode_pdu(header + body)


# --- pynetdicom peers (blocking: call them through asyncio.to_thread) -------------------------


def pynetdicom_ae(ae_title: str = "PYNETDICOM") -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 5
    return ae


def pynetdicom_find(assoc: Any, query: Dataset, sop_class: str, *, msg_id: int,
                    context_id: int, cancel_after: int | None = None
                    ) -> tuple[list[Any], list[int], Any]:
    """One C-FIND on an established pynetdicom association: answers, pending statuses, final.

    With `cancel_after`, a C-CANCEL follows that many pending answers.
    """
    answers: list[Any] = []
    pending: list[int] = []
    final = None
    for status, identifier in assoc.send_c_find(query, sop_class, msg_id=msg_id):
        assert status, "no C-FIND response"
        if status.Status in (Status.PENDING, Status.PENDING_WARNING):
            answers.append(identifier)
            pending.append(int(status.Status))
            if cancel_after is not None and len(pending) == cancel_after:
                assoc.send_c_cancel(msg_id, context_id)
        else:
            final = status
    assert final is not None
    return answers, pending, final


@dataclass(frozen=True, slots=True)
class Rejection:
    """Result, source and reason of an A-ASSOCIATE-RJ (PS3.8 §9.3.4)."""

    result: int
    source: int
    reason: int


def pynetdicom_reject(port: int, *, calling: str = "PYNETDICOM", called: str = "ANY-SCP"
                      ) -> Rejection:
    """Propose Verification and return the A-ASSOCIATE-RJ received (fails if accepted).

    The RJ is read from pynetdicom's PDU-received event, not from `assoc.is_rejected`:
    when the RJ comes back within a millisecond, pynetdicom's requestor may see its socket
    already closed and report an abort instead (a race in its ACSE, not in the peer).
    """
    from pynetdicom import evt
    from pynetdicom.pdu import A_ASSOCIATE_RJ
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    received: list[Any] = []
    ae = pynetdicom_ae(calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, port, ae_title=called,
                         evt_handlers=[(evt.EVT_PDU_RECV, lambda e: received.append(e.pdu))])
    try:
        assert not assoc.is_established, "the association was accepted"
        rejections = [pdu for pdu in received if isinstance(pdu, A_ASSOCIATE_RJ)]
        assert len(rejections) == 1, f"expected one A-ASSOCIATE-RJ, received {received}"
        (rj,) = rejections
        return Rejection(rj.result, rj.source, rj.reason_diagnostic)
    finally:
        if assoc.is_established:
            assoc.abort()


# --- data sets ------------------------------------------------------------------------------

UID_ROOT = "1.2.826.0.1.3680043.8.498.4242"  # fixed test UIDs: deterministic data sets


def make_ct(pixel_bytes: int = 512 * 512 * 2, index: int = 1) -> Dataset:
    """A small, deterministic CT Image data set whose Pixel Data is about `pixel_bytes`."""
    columns = 512
    rows = max(1, pixel_bytes // (columns * 2))
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{UID_ROOT}.3.{index}"
    ds.StudyInstanceUID = f"{UID_ROOT}.1"
    ds.SeriesInstanceUID = f"{UID_ROOT}.2"
    ds.PatientName = "Test^Loopback"
    ds.PatientID = "LOOP-1"
    ds.Modality = "CT"
    ds.StudyDate = "20240101"
    ds.InstanceNumber = index
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    size = rows * columns * 2
    ds.PixelData = (bytes(range(251)) * (size // 251 + 1))[:size]
    return ds


def stored_files(directory: Path) -> list[Path]:
    """Part 10 files the in-process servers started in `directory` have stored."""
    return sorted(directory.glob("server*/store/??/??/*.dcm"))


def dataset_bytes_of(path: Path) -> bytes:
    """The data set bytes of a Part 10 file: after preamble, prefix and File Meta (PS3.10 §7.1)."""
    raw = path.read_bytes()
    meta = dcmread(path, stop_before_pixels=True).file_meta
    start = 128 + 4 + 12 + meta.FileMetaInformationGroupLength  # 12: the group length element
    return raw[start:]


def encode_implicit_le(ds: Dataset) -> bytes:
    """The data set as Implicit VR Little Endian bytes, no File Meta (PS3.5 A.1)."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return fp.getvalue()


# --- fixtures (re-exported by tests/net/conftest.py and tests/interop/conftest.py) -----------


@pytest.fixture(scope="session", autouse=True)
def dcmtk() -> str:
    """DCMTK must be installed: these tests fail, never skip, without it."""
    return check_dcmtk()


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start in-process servers (`await start_server(limits, **sections)`); stopped after."""
    async with server_factory(tmp_path) as start:
        yield start


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    """An in-process server on the embedded defaults, with TEST_LIMITS."""
    return await start_server()


@pytest.fixture
def assoc_log() -> Iterator[AssociationLog]:
    """The `minipacs.association` lines logged during the test."""
    with association_log() as handler:
        yield handler
