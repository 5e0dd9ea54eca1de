#!/usr/bin/env python3
"""C-STORE ingest benchmark: DCMTK storescu → minipacs, Orthanc, pynetdicom and DCMTK storescp.

Prints instances/s, MB/s and peak server RSS for each server x {CT 512x512, tiny 64x64} x
{1, 4 concurrent associations} (medians of --runs runs, a fresh server and data folder per
run), ratios against Orthanc and pynetdicom, the fsync floor of the temp filesystem, and
optionally the RSS of minipacs while a ~2 GiB instance streams in. See benchmarks/README.md.
Everything runs on 127.0.0.1; every process it starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_data import GROUPS, DataSet, make_ct_set, write_big_instance
from ingest_servers import (
    ORTHANC,
    SERVER_AE,
    SERVER_KINDS,
    Minipacs,
    Running,
    ServerKind,
    dcmtk_env,
    stop,
)

STORESCU: Final = "/usr/bin/storescu"
CLIENT_AE: Final = "BENCHSCU"
RSS_INTERVAL: Final = 0.05
CLIENT_TIMEOUT: Final = 900.0
BIG_TIMEOUT: Final = 1800.0
FSYNC_FLOOR_SECONDS: Final = 10.0
BIG_RSS_LIMIT_MB: Final = 200.0
MB: Final = 1_000_000
MIB: Final = 1 << 20
ASSOCIATIONS: Final = (1, 4, 16)  # each divides ingest_data.GROUPS
TARGET_ASSOCIATIONS: Final = (1, 4)  # the four figures of issue 16 (with CT and tiny)
TARGET_VS_ORTHANC: Final = 1.0
TARGET_VS_PYNETDICOM: Final = 3.0
OTHER: Final = "minipacs-other"  # --other: another checkout's minipacs


def progress(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


# --- measuring ---------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int, tree: bool) -> float:
    """User + system CPU of `pid` (and its descendants, live or reaped, when `tree`)."""
    total = 0.0
    for current in _tree(pid) if tree else [pid]:
        try:
            with open(f"/proc/{current}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # proc(5): utime, stime, cutime, cstime are fields 14-17 (11-14 after the name).
        ticks = int(fields[11]) + int(fields[12])
        if tree and current == pid:
            ticks += int(fields[13]) + int(fields[14])  # children already reaped
        total += ticks / _CLOCK_TICKS
    return total


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc/<pid>/task/<tid>/children)."""
    pids, todo = [], [pid]
    while todo and len(pids) < 10_000:
        current = todo.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError), open(
                        f"/proc/{current}/task/{task}/children", encoding="ascii") as f:
                    todo.extend(int(child) for child in f.read().split())
    return pids


class RssSampler:
    """Polls the server's resident set (its process tree when it forks) every 50 ms."""

    def __init__(self, pid: int, tree: bool) -> None:
        self.pid, self.tree = pid, tree
        self.peak_kib = 0
        self.first_kib = 0
        self.cpu_start = self.cpu_used = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        pids = _tree(self.pid) if self.tree else [self.pid]
        return sum(_rss_kib(pid) for pid in pids)

    def _run(self) -> None:
        while not self._stop.wait(RSS_INTERVAL):
            self.peak_kib = max(self.peak_kib, self.sample())

    def __enter__(self) -> RssSampler:
        self.first_kib = self.peak_kib = self.sample()
        self.cpu_start = _cpu_seconds(self.pid, self.tree)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak_kib = max(self.peak_kib, self.sample())
        self.cpu_used = _cpu_seconds(self.pid, self.tree) - self.cpu_start


@dataclass
class ClientRun:
    elapsed: float
    exit_codes: list[int]
    logs: list[Path]


def run_storescu(folders: list[list[Path]], port: int, max_pdu: int, logdir: Path,
                 timeout: float, clients: list[subprocess.Popen[bytes]]) -> ClientRun:
    """One storescu per list of folders, all at once; time from the first start to the last
    exit."""
    procs, logs = [], []
    start = time.perf_counter()
    try:
        for i, folder in enumerate(folders):
            log = logdir / f"storescu-{i}.log"
            logs.append(log)
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [STORESCU, "-aet", CLIENT_AE, "-aec", SERVER_AE, "-pdu", str(max_pdu),
                     "+sd", "+r", "127.0.0.1", str(port), *map(str, folder)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=dcmtk_env(), start_new_session=True)
            clients.append(proc)
            procs.append(proc)
        deadline = start + timeout
        for proc in procs:
            proc.wait(timeout=max(0.1, deadline - time.perf_counter()))
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return ClientRun(elapsed, [proc.returncode for proc in procs], logs)


@dataclass
class Sample:
    elapsed: float
    rss_kib: int
    cpu: float  # server CPU seconds (user + system) during the transfer
    arrived: int
    ok: bool
    note: str = ""


@dataclass
class Cell:
    samples: list[Sample] = field(default_factory=list)

    def valid(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]


def measure(kind: ServerKind, data: DataSet, associations: int, workdir: Path, max_pdu: int,
            registry: list[Running], clients: list[subprocess.Popen[bytes]]) -> Sample:
    """Start a fresh server, send `data` over `associations` associations, stop, count."""
    server = kind.start(workdir, max_pdu, registry)
    try:
        folders = [[data.root]] if associations == 1 else [
            list(data.groups[i::associations]) for i in range(associations)]
        with RssSampler(server.proc.pid, kind.forks) as rss:
            client = run_storescu(folders, server.port, max_pdu, workdir, CLIENT_TIMEOUT,
                                  clients)
    finally:
        stop(server)
    arrived = kind.count(workdir)
    problems = []
    if any(client.exit_codes):
        problems.append(f"storescu exit codes {client.exit_codes}")
    if arrived != data.count:
        problems.append(f"{data.count - arrived} of {data.count} instances lost")
    if problems:
        tails = "\n".join(log.read_text(errors="replace")[-800:] for log in client.logs)
        progress(f"  !! {kind.name}: {'; '.join(problems)}\n{tails}\n{server.log_tail()}")
    return Sample(client.elapsed, rss.peak_kib, rss.cpu_used, arrived, not problems,
                  "; ".join(problems))


def fsync_floor(folder: Path, size: int, max_files: int) -> float:
    """Files/s creating `size`-byte files with fsync of each file and of its folder."""
    folder.mkdir(parents=True)
    payload = os.urandom(size)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    count = 0
    start = time.perf_counter()
    try:
        while count < max_files and time.perf_counter() - start < FSYNC_FLOOR_SECONDS:
            fd = os.open(folder / f"f{count:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.fsync(dir_fd)
            count += 1
        elapsed = time.perf_counter() - start
    finally:
        os.close(dir_fd)
        shutil.rmtree(folder, ignore_errors=True)
    return count / elapsed


# --- the 2 GiB instance ------------------------------------------------------------------


def big_check(data_dir: Path, workdir: Path, max_pdu: int, registry: list[Running],
              clients: list[subprocess.Popen[bytes]]) -> list[str]:
    """Send one ~2 GiB instance to minipacs; report its RSS during the transfer."""
    frames, rows, columns = 2048, 1024, 1024
    need = 2 * frames * rows * columns + (1 << 30)  # the file, its stored copy, some room
    free = shutil.disk_usage(data_dir).free
    if free < need:
        return [f"2 GiB instance: skipped, {free / MIB:.0f} MiB free < {need / MIB:.0f} MiB"]
    path = data_dir / "big.dcm"
    progress("generating the ~2 GiB multi-frame instance (streamed to disk)...")
    t0 = time.perf_counter()
    size = write_big_instance(path, frames, rows, columns)
    progress(f"  {size / MIB:.0f} MiB written in {time.perf_counter() - t0:.1f} s")
    kind = Minipacs()
    try:
        server = kind.start(workdir, max_pdu, registry)
        try:
            with RssSampler(server.proc.pid, tree=False) as rss:
                client = run_storescu([[path]], server.port, max_pdu, workdir, BIG_TIMEOUT,
                                      clients)
        finally:
            stop(server)
        arrived = kind.count(workdir)
        stored = sorted((workdir / "store").rglob("*.dcm"))
        stored_size = stored[0].stat().st_size if stored else 0
    finally:
        path.unlink(missing_ok=True)
    peak_mb = rss.peak_kib * 1024 / MB
    first_mb = rss.first_kib * 1024 / MB
    flat = peak_mb < BIG_RSS_LIMIT_MB
    ok = not any(client.exit_codes) and arrived == 1
    return [
        f"2 GiB instance → minipacs: {size / MIB:.0f} MiB file ({frames} frames "
        f"{rows}x{columns} 8-bit) in {client.elapsed:.1f} s = {size / MB / client.elapsed:.0f} "
        f"MB/s; storescu exit {client.exit_codes}, instances indexed {arrived}, stored file "
        f"{stored_size / MIB:.0f} MiB",
        f"  minipacs RSS before {first_mb:.0f} MB, peak during transfer {peak_mb:.0f} MB "
        f"(+{peak_mb - first_mb:.0f} MB): "
        f"{'FLAT' if flat else 'NOT FLAT'} (limit {BIG_RSS_LIMIT_MB:.0f} MB)"
        f"{'' if ok else '; TRANSFER FAILED'}",
    ]


# --- report ------------------------------------------------------------------------------


def _median_figures(cell: Cell, data: DataSet) -> tuple[float, float, float, float] | None:
    """inst/s, MB/s, RSS MB, server CPU ms per instance (medians of the valid runs)."""
    valid = cell.valid()
    if not valid:
        return None
    elapsed = statistics.median(s.elapsed for s in valid)
    rss = statistics.median(s.rss_kib for s in valid) * 1024 / MB
    cpu = statistics.median(s.cpu for s in valid) * 1000 / data.count
    return data.count / elapsed, data.total_bytes / MB / elapsed, rss, cpu


def report(results: dict[tuple[str, str, int], Cell], datasets: list[DataSet],
           servers: list[str], associations: list[int]) -> list[str]:
    lines = []
    header = (f"{'data':<16}{'assoc':>5}  {'server':<11}{'inst/s':>9}{'MB/s':>8}"
              f"{'RSS MB':>8}{'CPU ms':>8}{'vs orthanc':>12}{'vs pynetdicom':>15}"
              f"  runs (inst/s)")
    lines += [header, "-" * len(header)]
    targets = []
    for data in datasets:
        for assoc in associations:
            figures = {name: _median_figures(results[(name, data.name, assoc)], data)
                       for name in servers}
            for name in servers:
                cell = results[(name, data.name, assoc)]
                fig = figures[name]
                runs = " ".join(f"{data.count / s.elapsed:.0f}" if s.ok else "FAIL"
                                for s in cell.samples)
                if fig is None:
                    lines.append(f"{data.label:<16}{assoc:>5}  {name:<11}{'FAILED':>9}"
                                 f"{'':>8}{'':>8}{'':>8}{'':>12}{'':>15}  {runs}")
                    continue
                ratios = []
                for ref in ("orthanc", "pynetdicom"):
                    ref_fig = figures.get(ref)
                    ratios.append(f"{fig[0] / ref_fig[0]:.2f}x" if ref_fig else "-")
                lines.append(f"{data.label:<16}{assoc:>5}  {name:<11}{fig[0]:>9.0f}"
                             f"{fig[1]:>8.1f}{fig[2]:>8.0f}{fig[3]:>8.2f}{ratios[0]:>12}"
                             f"{ratios[1]:>15}  {runs}")
            mine = figures.get("minipacs")
            if mine is None and "minipacs" in servers:
                targets.append(f"  {data.label}, {assoc} assoc: minipacs FAILED")
            elif mine is not None and assoc in TARGET_ASSOCIATIONS:
                for ref, goal in (("orthanc", TARGET_VS_ORTHANC),
                                  ("pynetdicom", TARGET_VS_PYNETDICOM)):
                    ref_fig = figures.get(ref)
                    if ref_fig:
                        ratio = mine[0] / ref_fig[0]
                        verdict = "ok" if ratio >= goal else "MISSED"
                        targets.append(f"  {data.label}, {assoc} assoc: {ratio:.2f}x {ref} "
                                       f"(target >= {goal:.1f}x): {verdict}")
        lines.append("")
    if targets:
        lines += ["minipacs targets (inst/s; MB/s gives the same ratios on the same data):",
                  *targets]
    return lines


# --- main --------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (median; 3)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 run, 100 CT / 400 tiny, no 2 GiB instance")
    parser.add_argument("--servers", default=",".join(SERVER_KINDS),
                        help=f"comma-separated subset of {','.join(SERVER_KINDS)}")
    parser.add_argument("--big", action=argparse.BooleanOptionalAction, default=None,
                        help="send a ~2 GiB instance to minipacs and watch its RSS (default on)")
    parser.add_argument("--ct", type=int, default=None, help="CT 512x512 instances (500)")
    parser.add_argument("--tiny", type=int, default=None, help="tiny 64x64 instances (2000)")
    parser.add_argument("--max-pdu", type=int, default=131072,
                        help="max PDU for every server and client (DCMTK: 4096-131072)")
    parser.add_argument("--tmpdir", default=None, help="parent of the temp dir (default: TMPDIR)")
    parser.add_argument("--database-url", default=None, metavar="URL",
                        help="also minipacs on this PostgreSQL server, one and two processes "
                             "(a scratch database per run beside the one named; needs CREATEDB)")
    parser.add_argument("--assoc", default=",".join(map(str, ASSOCIATIONS)),
                        help="concurrent association counts, comma-separated, each dividing "
                             f"{GROUPS} (default {','.join(map(str, ASSOCIATIONS))})")
    parser.add_argument("--other", type=Path, default=None,
                        help="another minipacs checkout, measured as 'minipacs-other' beside "
                             "this one (A/B of a change under the same load)")
    args = parser.parse_args(argv)
    # --quick changes the defaults; an option given explicitly still wins.
    defaults = (1, 100, 400, False) if args.quick else (3, 500, 2000, True)
    for key, default in zip(("runs", "ct", "tiny", "big"), defaults, strict=True):
        if getattr(args, key) is None:
            setattr(args, key, default)
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    args.kinds = dict(SERVER_KINDS)
    if args.other is not None:
        args.kinds[OTHER] = Minipacs(args.other.resolve(), OTHER)
        if OTHER not in names:
            names.insert(names.index("minipacs") + 1 if "minipacs" in names else 0, OTHER)
    unknown = [n for n in names if n not in args.kinds]
    if unknown or not names:
        parser.error(f"unknown server(s) {unknown}; choose from {','.join(args.kinds)}")
    try:
        args.associations = [int(a) for a in args.assoc.split(",")]
    except ValueError:
        parser.error(f"--assoc: not a list of integers: {args.assoc!r}")
    if any(a < 1 or GROUPS % a for a in args.associations):
        parser.error(f"--assoc: every count must divide {GROUPS}")
    if args.runs < 1 or args.ct < GROUPS or args.tiny < GROUPS \
            or not 4096 <= args.max_pdu <= 131072:
        parser.error(f"--runs >= 1, --ct/--tiny >= {GROUPS}, --max-pdu in 4096..131072")
    args.server_names = names
    return args


def _check_client() -> str:
    out = subprocess.run([STORESCU, "--version"], capture_output=True, text=True, timeout=30,
                         check=False).stdout
    if "dcmtk" not in out.lower():
        raise SystemExit(f"{STORESCU} is not DCMTK's storescu: {out[:200]!r}")
    return out.splitlines()[0].strip("$ ")


def _ensure_orthanc(names: list[str]) -> list[str]:
    if "orthanc" not in names or Path(ORTHANC).exists():
        return names
    progress(f"{ORTHANC} missing: running 'apt-get install -y orthanc'")
    result = subprocess.run(["apt-get", "install", "-y", "orthanc"], capture_output=True,
                            text=True, timeout=900, check=False,
                            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if result.returncode != 0 or not Path(ORTHANC).exists():
        progress(f"  could not install Orthanc; skipping it:\n{result.stderr[-800:]}")
        return [n for n in names if n != "orthanc"]
    progress("  installed the Debian package orthanc")
    print("note: this run installed the Debian package orthanc (apt-get install -y orthanc)")
    return names


def _fs_type(path: Path) -> str:
    """The type of the filesystem holding `path` (the longest matching mount point)."""
    best, fstype = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and str(path).startswith(fields[1].rstrip("/") + "/") \
                    and len(fields[1]) > len(best):
                best, fstype = fields[1], f"{fields[2]} on {fields[0]}"
    return fstype


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop servers, remove temp dir


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    client_version = _check_client()
    names = _ensure_orthanc(args.server_names)
    kinds = []
    for name in names:
        why = args.kinds[name].available()
        if why:
            progress(f"skipping {name}: {why}")
        else:
            kinds.append(args.kinds[name])
    databases = None
    if args.database_url:
        from pg_servers import MinipacsOnDatabase, ScratchDatabases

        databases = ScratchDatabases(args.database_url)
        at = next((i + 1 for i, k in enumerate(kinds) if k.name == "minipacs"), len(kinds))
        kinds[at:at] = [MinipacsOnDatabase(databases, n) for n in (1, 2)]
    names = [k.name for k in kinds]
    registry: list[Running] = []
    clients: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="minipacs-ingest-", dir=args.tmpdir))
    try:
        return _run(args, kinds, names, tmp, client_version, registry, clients)
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for running in registry:
            stop(running)  # idempotent: a stopped group is simply gone
        shutil.rmtree(tmp, ignore_errors=True)
        if databases is not None:
            databases.close()


def _run(args: argparse.Namespace, kinds: list[ServerKind], names: list[str], tmp: Path,
         client_version: str, registry: list[Running],
         clients: list[subprocess.Popen[bytes]]) -> int:
    load = os.getloadavg()
    print("minipacs ingest benchmark (benchmarks/ingest.py)")
    print(f"host: {os.cpu_count()} CPU ({_cpu_model()}), Linux {platform.release()}, "
          f"Python {platform.python_version()}, load average at start {load[0]:.2f}")
    print(f"temp dir: {tmp} ({_fs_type(tmp)}); client: {client_version} ({STORESCU}), "
          f"TCP_NODELAY=1; max PDU {args.max_pdu} bytes for every server and client")
    print(f"runs: {args.runs} (medians; a fresh server and data folder per run); "
          f"MB = 10^6 bytes of Part 10 files sent; RSS = peak VmRSS polled every 50 ms; "
          f"CPU ms = server user+system CPU per instance during the transfer")
    for kind in kinds:
        print(f"  {kind.name:<11}{kind.describe(args.max_pdu)}")
    sys.stdout.flush()

    progress("measuring the fsync floor...")
    floor_small = fsync_floor(tmp / "fsync-8k", 8 * 1024, 2000)
    floor_ct = fsync_floor(tmp / "fsync-512k", 512 * 1024, 1000)
    print(f"fsync floor (same filesystem, file fsync + folder fsync per file): "
          f"8 KiB files {floor_small:.0f} files/s, 512 KiB files {floor_ct:.0f} files/s")

    data_dir = tmp / "data"
    progress(f"generating {args.ct} CT + {args.tiny} tiny instances with pydicom...")
    t0 = time.perf_counter()
    datasets = [
        make_ct_set(data_dir / "ct", "ct", "CT 512x512", args.ct, 512, series=4),
        make_ct_set(data_dir / "tiny", "tiny", "tiny 64x64", args.tiny, 64, series=4),
    ]
    progress(f"  done in {time.perf_counter() - t0:.1f} s")
    for data in datasets:
        print(f"data {data.label}: {data.count} instances, {data.total_bytes / MB:.1f} MB "
              f"({data.total_bytes / data.count / 1024:.1f} KiB each), 1 study, 4 series")
    sys.stdout.flush()

    results = {(k.name, d.name, a): Cell()
               for k in kinds for d in datasets for a in args.associations}
    for run in range(args.runs):
        for kind in kinds:  # servers interleaved per run, so drift hits them all alike
            for data in datasets:
                for assoc in args.associations:
                    workdir = tmp / f"run{run}-{kind.name}-{data.name}-{assoc}"
                    try:
                        sample = measure(kind, data, assoc, workdir, args.max_pdu, registry,
                                         clients)
                    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                        progress(f"  !! {kind.name} {data.label} {assoc} assoc: {exc}")
                        sample = Sample(float("inf"), 0, 0.0, -1, False, str(exc))
                    results[(kind.name, data.name, assoc)].samples.append(sample)
                    progress(f"[run {run + 1}/{args.runs}] {kind.name:<11}{data.label:<12}"
                             f"{assoc} assoc: {sample.elapsed:7.2f} s "
                             f"{data.count / sample.elapsed:7.0f} inst/s  "
                             f"RSS {sample.rss_kib / 1024:5.0f} MiB  "
                             f"CPU {sample.cpu:6.2f} s"
                             f"{'' if sample.ok else '  FAILED: ' + sample.note}")
                    shutil.rmtree(workdir, ignore_errors=True)

    print()
    for line in report(results, datasets, names, args.associations):
        print(line)
    counts = {data.name: data.count for data in datasets}
    samples = [(counts[dname], s) for (_, dname, _), cell in results.items()
               for s in cell.samples]
    lost = sum(count - s.arrived for count, s in samples if s.arrived >= 0)
    failed = sum(1 for _, s in samples if not s.ok)
    print(f"no instance lost: {'yes' if lost == 0 else f'NO, {lost} lost'}; "
          f"failed runs: {failed} of {len(samples)}")
    sys.stdout.flush()

    print(f"load average at the end of the measurements {os.getloadavg()[0]:.2f} "
          f"(other work on this machine skews every figure)")
    if args.big and "minipacs" in names:
        print()
        for line in big_check(data_dir, tmp / "big-minipacs", args.max_pdu, registry, clients):
            print(line)
    return 0 if lost == 0 and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
