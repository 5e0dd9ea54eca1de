#!/usr/bin/env python3
"""C-MOVE / C-GET benchmark: minipacs against Orthanc and pynetdicom's qrscp, same data.

Each server receives the same CT studies (512x512 16-bit; 100 and 500 instances by default)
by DCMTK ``storescu`` (not timed). Then, taking the servers in turn, each study is moved
with DCMTK ``movescu`` to a DCMTK ``storescp`` (the same destination for every server) and
fetched with DCMTK ``getscu``; the wall time of each movescu/getscu process is timed, with
the server's peak RSS and CPU over the operation. See benchmarks/README.md.
Everything runs on 127.0.0.1; every process started is stopped, the temp dir removed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_data import DataSet, make_ct_set
from ingest_servers import (
    DCMTK_STORESCP,
    SERVER_AE,
    Running,
    ServerKind,
    dcmtk_env,
    machine,
    stop,
    workspace,
)
from pydicom import dcmread
from retrieve_servers import CLIENT_AE, DEST_AE, retrieve_kinds

STORESCU: Final = "/usr/bin/storescu"
MOVESCU: Final = "/usr/bin/movescu"
GETSCU: Final = "/usr/bin/getscu"
STORE_TIMEOUT: Final = 1800.0
OP_TIMEOUT: Final = 600.0
SERIES: Final = 4
IMAGE_SIZE: Final = 512
MEGABYTE: Final = 1_000_000
MIB: Final = 1 << 20
OPERATIONS: Final = ("move", "get")
# DCMTK -v: "Completed Suboperations       : 100" in the final C-MOVE/C-GET response.
COUNT_RE: Final = re.compile(r"(Completed|Failed|Warning) Suboperations\s*:\s*(\d+)")
# movescu -v prints only the statuses; storescp -v logs each instance it receives.
MOVE_SUCCESS: Final = "Received Final Move Response (Success)"
STORE_LINE: Final = b"Received Store Request"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the destination ------------------------------------------------------------------------


class Destination(ServerKind):
    """DCMTK ``storescp`` as the C-MOVE destination: discards the data (``--ignore``) or
    writes it to a folder (``--write``), the same for every server."""

    name = "storescp"

    def __init__(self, write: bool) -> None:
        self.write = write

    def describe(self, max_pdu: int) -> str:
        how = "writes each instance to a folder" if self.write else "--ignore (discards data)"
        return f"DCMTK storescp, AE {DEST_AE}, TCP_NODELAY=1, -pdu {max_pdu}, {how}"

    def command(self, workdir: Path, port: int, max_pdu: int) -> tuple[list[str], dict[str, str]]:
        # -v: one "Received Store Request" line per instance, counted by the benchmark.
        argv = [DCMTK_STORESCP, "-v", "-aet", DEST_AE, "-pdu", str(max_pdu)]
        if self.write:
            (workdir / "out").mkdir()
            argv += ["-od", str(workdir / "out")]
        else:
            argv.append("--ignore")
        return [*argv, str(port)], dcmtk_env()

    def count(self, workdir: Path) -> int:
        return sum(1 for _ in (workdir / "out").iterdir()) if self.write else 0


# --- measuring ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed movescu/getscu run."""

    seconds: float
    ok: bool
    completed: int
    failed: int
    peak_rss: int  # bytes, VmHWM since it was reset before the operation
    rss_before: int
    rss_after: int
    cpu_seconds: float  # server user + system over the operation
    load: float  # 1-minute load average at the start
    error: str = ""


@dataclass
class Row:
    """One size x operation x server."""

    server: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def good(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid` in bytes (proc(5))."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (proc(5): clear_refs, value 5)."""
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid`, all threads (proc(5): stat fields 14, 15)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def op_argv(op: str, port: int, study_uid: str, max_pdu: int, out: Path | None) -> list[str]:
    """movescu (to DEST) or getscu (discarding, or writing to `out`), Study Root, STUDY."""
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
    common = ["-v", "-S", "-aet", CLIENT_AE, "-aec", SERVER_AE, "-pdu", str(max_pdu), *keys]
    if op == "move":
        return [MOVESCU, *common, "-aem", DEST_AE, "127.0.0.1", str(port)]
    where = ["-od", str(out)] if out is not None else ["--ignore"]
    return [GETSCU, *common, *where, "127.0.0.1", str(port)]


def received(dest: Running) -> int:
    """Instances the destination storescp has logged so far."""
    return dest.log_path.read_bytes().count(STORE_LINE)


def run_op(op: str, server: Running, dest: Running, study_uid: str, expected: int,
           max_pdu: int, out: Path | None) -> Sample:
    """Time one movescu/getscu process; check what arrived (move) or the final counts (get)."""
    pid = server.proc.pid
    arrived = received(dest) if op == "move" else 0
    load = os.getloadavg()[0]
    reset_peak(pid)
    before = proc_status(pid)["VmRSS"]
    cpu0 = cpu_seconds(pid)
    started = time.perf_counter()
    done = subprocess.run(op_argv(op, server.port, study_uid, max_pdu, out),
                          stdin=subprocess.DEVNULL, capture_output=True, env=dcmtk_env(),
                          timeout=OP_TIMEOUT, check=False)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu0
    status = proc_status(pid)
    text = (done.stdout + done.stderr).decode(errors="replace")
    if op == "move":
        completed = received(dest) - arrived
        failed = 0 if MOVE_SUCCESS in text else -1
    else:
        counts = {name: int(value) for name, value in COUNT_RE.findall(text)}  # last wins
        completed, failed = counts.get("Completed", -1), counts.get("Failed", -1)
    error = ""
    if done.returncode != 0:
        error = f"exit {done.returncode}: {' | '.join(text.splitlines()[-4:])}"
    elif completed != expected or failed != 0:
        error = (f"{completed} completed, {failed} failed (-1: no final Success), "
                 f"want {expected}")
    return Sample(elapsed, not error, completed, failed, status["VmHWM"], before,
                  status["VmRSS"], cpu, load, error)


def store_files(port: int, folder: Path) -> None:
    """C-STORE every file under `folder` with DCMTK storescu over one association."""
    argv = [STORESCU, "+sd", "+r", "-aet", CLIENT_AE, "-aec", SERVER_AE, "127.0.0.1",
            str(port), str(folder)]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          env=dcmtk_env(), timeout=STORE_TIMEOUT, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").splitlines()[-5:]
        raise RuntimeError(f"storescu exited with {done.returncode}: {' | '.join(tail)}")


def startup_ms(runs: int = 5) -> float:
    """Median wall time of `movescu --version`: the process start inside every timing."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([MOVESCU, "--version"], capture_output=True, env=dcmtk_env(),
                       timeout=30, check=False)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


# --- report ---------------------------------------------------------------------------------


def print_table(data: DataSet, op: str, rows: list[Row]) -> None:
    print(f"\n## {op.upper()}: {data.count} instances, {data.total_bytes / MEGABYTE:.1f} MB "
          f"(C-{'MOVE to storescp' if op == 'move' else 'GET by getscu'})")
    print(f"{'server':10} {'inst/s':>8} {'MB/s':>7} {'wall ms':>8} {'RSS MB':>7} "
          f"{'+MB':>6} {'CPU ms':>7} {'vs orthanc':>10} {'load':>9}  runs (inst/s)")
    ref = next((r for r in rows if r.server == "orthanc" and r.good), None)
    for row in rows:
        runs = " ".join(f"{data.count / s.seconds:.0f}" if s.ok else "FAIL"
                        for s in row.samples)
        loads = [s.load for s in row.samples]
        load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
        good = row.good
        if not good:
            errors = "; ".join(sorted({s.error for s in row.samples}))[:200]
            print(f"{row.server:10} NOT MEASURED: {errors}")
            continue
        seconds = statistics.median(s.seconds for s in good)
        ratio = ""
        if ref is not None and row is not ref:
            ratio = f"{statistics.median(s.seconds for s in ref.good) / seconds:.2f}x"
        peak = max(s.peak_rss for s in good) / MIB
        growth = statistics.median(s.peak_rss - s.rss_before for s in good) / MIB
        cpu = statistics.median(s.cpu_seconds for s in good) * 1000 / data.count
        print(f"{row.server:10} {data.count / seconds:8.0f} "
              f"{data.total_bytes / MEGABYTE / seconds:7.1f} {seconds * 1000:8.1f} "
              f"{peak:7.1f} {growth:6.1f} {cpu:7.2f} {ratio:>10} {load:>9}  {runs}")
        for s in row.samples:
            if not s.ok:
                print(f"{'':10} failed run: {s.error}")


def print_targets(results: dict[tuple[int, str], list[Row]]) -> None:
    print("\n## Targets (minipacs >= 1.0x Orthanc, inst/s medians)")
    for (count, op), rows in results.items():
        by = {r.server: r for r in rows if r.good}
        mine, orthanc = by.get("minipacs"), by.get("orthanc")
        if mine is None or orthanc is None:
            print(f"{count:5} {op:4}: not measured")
            continue
        a = count / statistics.median(s.seconds for s in mine.good)
        b = count / statistics.median(s.seconds for s in orthanc.good)
        print(f"{count:5} {op:4}: minipacs {a:.0f} / orthanc {b:.0f} = {a / b:.2f}x "
              f"{'ok' if a >= b else 'MISSED'}")


# --- main -----------------------------------------------------------------------------------


def study_uid(data: DataSet) -> str:
    first = next(p for g in data.groups for p in sorted(g.iterdir()))
    return str(dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def measure(args: argparse.Namespace, root: Path, registry: list[Running]
            ) -> dict[tuple[int, str], list[Row]]:
    datasets: list[DataSet] = []
    for count in args.sizes:
        progress(f"writing {count} CT instances")
        datasets.append(make_ct_set(root / "data" / f"ct{count}", f"ret{count}",
                                    f"{count} CT", count, IMAGE_SIZE, SERIES))
    uids = {d.count: study_uid(d) for d in datasets}
    dest_kind = Destination(args.write)
    dest = dest_kind.start(root / "dest", args.max_pdu, registry)
    kinds = retrieve_kinds(dest.port, args.other)
    print(f"destination: {dest_kind.describe(args.max_pdu)}")
    get_out = root / "get-out" if args.write else None
    print(f"clients: {MOVESCU} and {GETSCU} -v -S (Study Root, STUDY level), TCP_NODELAY=1, "
          f"-pdu {args.max_pdu}; getscu "
          f"{'writes to a folder' if args.write else '--ignore (discards data)'}; "
          f"process start (movescu --version) {startup_ms():.1f} ms, inside every timing")
    servers: dict[str, Running] = {}
    for name in args.servers:
        kind = kinds[name]
        if (why := kind.available()) is not None:
            progress(f"{name}: skipped ({why})")
            continue
        print(f"- {name}: {kind.describe(args.max_pdu)}")
        progress(f"{name}: starting, storing {sum(d.count for d in datasets)} instances")
        running = kind.start(root / name, args.max_pdu, registry)
        for data in datasets:
            store_files(running.port, data.root)
        servers[name] = running
    sys.stdout.flush()
    results: dict[tuple[int, str], list[Row]] = {}
    for data in datasets:
        for op in OPERATIONS:
            rows = {name: Row(name) for name in servers}
            for rep in range(args.warmup + args.reps):
                for name, running in servers.items():
                    out = None
                    if get_out is not None and op == "get":
                        shutil.rmtree(get_out, ignore_errors=True)
                        get_out.mkdir()
                        out = get_out
                    sample = run_op(op, running, dest, uids[data.count], data.count,
                                    args.max_pdu, out)
                    if args.write:
                        folder = out if out is not None else dest.workdir / "out"
                        got = sum(1 for _ in folder.iterdir())
                        shutil.rmtree(folder)
                        folder.mkdir()
                        if got != data.count and sample.ok:
                            sample = Sample(**{**_fields(sample), "ok": False,
                                               "error": f"{got} files arrived"})
                    if rep >= args.warmup:
                        rows[name].samples.append(sample)
                    progress(f"{data.count} {op} {name} rep {rep + 1 - args.warmup}: "
                             f"{sample.seconds * 1000:.0f} ms "
                             f"{'ok' if sample.ok else sample.error}")
            results[(data.count, op)] = list(rows.values())
            print_table(data, op, list(rows.values()))
            sys.stdout.flush()
    return results


def _fields(sample: Sample) -> dict[str, object]:
    return {name: getattr(sample, name) for name in Sample.__slots__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,500", help="study sizes, comma-separated")
    parser.add_argument("--servers", default="minipacs,orthanc,qrscp",
                        help="subset of minipacs,orthanc,qrscp (and minipacs-other)")
    parser.add_argument("--reps", type=int, default=5, help="timed runs per server (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per server first")
    parser.add_argument("--max-pdu", type=int, default=131072,
                        help="max PDU of every receiver and every server (DCMTK: <= 131072)")
    parser.add_argument("--write", action="store_true",
                        help="storescp and getscu write what they receive to a folder "
                             "(default: --ignore, data discarded)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: one 20-instance study, 1 run, no warm-up")
    parser.add_argument("--tmpdir", default=None, help="where the temp dir goes")
    parser.add_argument("--other", type=Path, default=None,
                        help="another minipacs checkout, measured as 'minipacs-other' beside "
                             "this one (A/B of a change under the same load)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.reps, args.warmup = "20", 1, 0
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.other is not None and "minipacs-other" not in args.servers:
        args.servers.append("minipacs-other")
    unknown = set(args.servers) - {"minipacs", "orthanc", "qrscp", "minipacs-other"}
    if unknown or args.reps < 1 or args.warmup < 0:
        parser.error(f"bad --servers {sorted(unknown)} or --reps/--warmup")
    args.sizes = [int(s) for s in str(args.sizes).split(",")]

    print("# C-MOVE / C-GET benchmark")
    print(machine())
    print(f"{args.reps} timed runs per server after {args.warmup} warm-up, servers taken in "
          f"turn; inst/s and MB/s (Part 10 file bytes, 10^6) from the median wall time of the "
          f"movescu/getscu process; RSS MB = peak server VmHWM during an operation (reset "
          f"before each), +MB = median of that peak minus the RSS before; CPU ms = server "
          f"CPU per instance")
    registry: list[Running] = []
    try:
        with workspace(args.tmpdir, "retrievebench-") as root:
            results = measure(args, root, registry)
    finally:
        for running in registry:
            stop(running)
    print_targets(results)
    load1, load5, _ = os.getloadavg()
    print(f"load average at the end: {load1:.2f} {load5:.2f}")
    failed = any(not s.ok for rows in results.values() for r in rows for s in r.samples)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
