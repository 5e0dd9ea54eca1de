#!/usr/bin/env python3
"""C-FIND latency benchmark: minipacs against Orthanc and pynetdicom's qrscp, same data.

For each index size: five Study Root queries (study level by PatientID, PatientName
wildcard, one-month StudyDate range, AccessionNumber; series level in one study), each sent
--reps times over one already-open association by our asyncio SCU: time to the first
response, to the final response, and per match (medians and p95). Then the wall time of
DCMTK ``findscu`` runs beside ``echoscu`` runs and bare process starts. At the comparison
size (10,000) every server holds the same files, C-STOREd with DCMTK ``storescu``; at
larger sizes minipacs serves an index filled by ``populate_index``. See benchmarks/README.md.
Everything runs on 127.0.0.1; every process started is stopped, the temp dir removed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(REPO_ROOT))

from find_data import Population, Study, build, write_files  # noqa: E402
from find_scu import FindQuery, FindTiming, QueryResult, measure_queries  # noqa: E402
from find_servers import CLIENT_AE, MinipacsFind, OrthancFind, QrscpFind  # noqa: E402
from ingest_servers import (  # noqa: E402
    SERVER_AE,
    Running,
    ServerKind,
    dcmtk_env,
    machine,
    minipacs_env,
    stop,
    workspace,
)
from pg_servers import MinipacsFindOnDatabase, ScratchDatabases, copy_index  # noqa: E402
from populate_index import load  # noqa: E402

from minipacs.app import loop_factory  # noqa: E402

STORESCU: Final = "/usr/bin/storescu"
FINDSCU: Final = "/usr/bin/findscu"
ECHOSCU: Final = "/usr/bin/echoscu"
STORE_TIMEOUT: Final = 1800.0
DCMTK_TIMEOUT: Final = 60.0
TARGET_MEDIAN_MS: Final = 10.0
TARGET_P95_MS: Final = 30.0
T = TypeVar("T")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- queries --------------------------------------------------------------------------------


STUDY_RETURN_KEYS: Final = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
    "ReferringPhysicianName", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_RETURN_KEYS: Final = (
    "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate",
    "SeriesTime", "BodyPartExamined", "NumberOfSeriesRelatedInstances",
)


def queries(pop: Population) -> list[FindQuery]:
    """The five benchmark queries with the number of answers each must give."""
    t = pop.targets
    instances: dict[str, int] = {}
    for se in pop.series:
        instances[se.study.uid] = instances.get(se.study.uid, 0) + se.instances

    def study(name: str, label: str, key: str, value: str,
              match: Callable[[Study], bool]) -> FindQuery:
        keys = dict.fromkeys(STUDY_RETURN_KEYS, "")
        keys[key] = value
        found = [s for s in pop.studies if match(s)]
        return FindQuery(name, label, "STUDY", keys, len(found),
                         sum(instances[s.uid] for s in found))

    low, high = t.date_range.split("-")
    series_keys = dict.fromkeys(SERIES_RETURN_KEYS, "")
    series_keys["StudyInstanceUID"] = t.series_study_uid
    return [
        study("patient_id", f"PatientID={t.patient_id}", "PatientID", t.patient_id,
              lambda s: s.patient.patient_id == t.patient_id),
        study("name", f"PatientName={t.name_pattern}", "PatientName", t.name_pattern,
              lambda s: s.patient.name.startswith(t.name_pattern.rstrip("*"))),
        study("date", f"StudyDate={t.date_range}", "StudyDate", t.date_range,
              lambda s: low <= s.date <= high),
        study("accession", f"AccessionNumber={t.accession}", "AccessionNumber", t.accession,
              lambda s: s.accession == t.accession),
        FindQuery("series", "SERIES in one study", "SERIES", series_keys, t.series_matches,
                  instances[t.series_study_uid]),
    ]


def all_studies(pop: Population) -> FindQuery:
    """Universal study query: checks that a server holds the whole population."""
    return FindQuery("all", "all studies", "STUDY", {"StudyInstanceUID": ""},
                     len(pop.studies), pop.instances)


# --- DCMTK process timings ------------------------------------------------------------------


@dataclass
class DcmtkTiming:
    startup: list[float] = field(default_factory=list)  # findscu --version
    echo: list[float] = field(default_factory=list)
    find: list[float] = field(default_factory=list)
    failures: int = 0


def _wall(argv: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          env=dcmtk_env(), timeout=DCMTK_TIMEOUT, check=False)
    return (time.perf_counter() - started) * 1000, done.returncode


def findscu_argv(port: int, query: FindQuery) -> list[str]:
    argv = [FINDSCU, "-S", "-aet", CLIENT_AE, "-aec", SERVER_AE,
            "-k", f"QueryRetrieveLevel={query.level}"]
    for key, value in query.keys.items():
        argv += ["-k", f"{key}={value}" if value else key]
    return [*argv, "127.0.0.1", str(port)]


def time_dcmtk(port: int, query: FindQuery, runs: int) -> DcmtkTiming:
    """Interleaved runs of a bare start, echoscu and findscu; wall time of each process."""
    timing = DcmtkTiming()
    echo = [ECHOSCU, "-aet", CLIENT_AE, "-aec", SERVER_AE, "127.0.0.1", str(port)]
    find = findscu_argv(port, query)
    for _ in range(runs):
        for argv, into in (([FINDSCU, "--version"], timing.startup), (echo, timing.echo),
                           (find, timing.find)):
            elapsed, rc = _wall(argv)
            if rc != 0:
                timing.failures += 1
            into.append(elapsed)
    return timing


# --- servers --------------------------------------------------------------------------------


@dataclass
class ServerRun:
    """One server at one size: how it was filled and what it measured."""

    server: str
    description: str
    running: Running | None = None
    per_instance: bool = False
    load_s: float | None = None
    results: list[QueryResult] = field(default_factory=list)
    dcmtk: DcmtkTiming | None = None
    error: str = ""
    loadavg: list[float] = field(default_factory=list)  # 1-minute load at each round


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, all its threads (proc(5): stat fields 14, 15)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store_files(port: int, folder: Path) -> float:
    """C-STORE every file under `folder` with DCMTK storescu over one association."""
    argv = [STORESCU, "+sd", "+r", "-aet", CLIENT_AE, "-aec", SERVER_AE, "127.0.0.1",
            str(port), str(folder)]
    started = time.perf_counter()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          env=dcmtk_env(), timeout=STORE_TIMEOUT, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").splitlines()[-5:]
        raise RuntimeError(f"storescu exited with {done.returncode}: {' | '.join(tail)}")
    return time.perf_counter() - started


def start_server(kind: ServerKind, workdir: Path, files: Path | None, pop: Population,
                 args: argparse.Namespace, registry: list[Running]) -> ServerRun:
    """Start `kind`, C-STORE `files` to it (if any), check it holds every study."""
    run = ServerRun(kind.name, kind.describe(args.max_pdu),
                    per_instance=getattr(kind, "answers_per_instance", False))
    progress(f"[{pop.instances:,}] {kind.name}: starting")
    try:
        run.running = kind.start(workdir, args.max_pdu, registry)
        if files is not None:
            progress(f"[{pop.instances:,}] {kind.name}: storing {pop.instances:,} files")
            run.load_s = store_files(run.running.port, files)
            progress(f"[{pop.instances:,}] {kind.name}: stored in {run.load_s:.1f} s")
        check = asyncio_run(measure_queries(run.running.port, [all_studies(pop)], 1, 0,
                                            per_instance=run.per_instance))[0]
        if check.error:
            run.error = f"population check failed: {check.error}"
    except Exception as exc:
        run.error = str(exc)
    if run.error:
        tail = run.running.log_tail() if run.running else ""
        progress(f"[{pop.instances:,}] {kind.name}: failed: {run.error}\n{tail}")
    return run


def _merge(into: list[QueryResult], chunk: list[QueryResult]) -> None:
    """Append one round's timings to the results so far (CPU per query averaged)."""
    if not into:
        into.extend(chunk)
        return
    for old, new in zip(into, chunk, strict=True):
        a, b = old.timing, new.timing
        if a.server_cpu is not None and b.server_cpu is not None:
            a.server_cpu = ((a.server_cpu * len(a.totals) + b.server_cpu * len(b.totals))
                            / (len(a.totals) + len(b.totals)))
        a.firsts += b.firsts
        a.totals += b.totals
        old.error = old.error or new.error


def measure_interleaved(runs: list[ServerRun], pop: Population,
                        args: argparse.Namespace) -> None:
    """--reps per query and server, in --rounds rounds taking the servers in turn.

    Interleaving spreads a change of machine load (other jobs) over every server alike.
    """
    live = [r for r in runs if not r.error and r.running is not None]
    rounds = max(1, min(args.rounds, args.reps))
    for round_ in range(rounds):
        reps = args.reps // rounds + (1 if round_ < args.reps % rounds else 0)
        warmup = args.warmup if round_ == 0 else 2
        for run in live:
            if run.error or any(r.error for r in run.results):
                continue
            assert run.running is not None
            pid = run.running.proc.pid
            run.loadavg.append(os.getloadavg()[0])
            try:
                chunk = asyncio_run(measure_queries(
                    run.running.port, queries(pop), reps, warmup,
                    per_instance=run.per_instance, cpu_probe=lambda pid=pid: cpu_seconds(pid)))
            except Exception as exc:
                run.error = f"round {round_ + 1}: {exc}"
                continue
            _merge(run.results, chunk)
        progress(f"[{pop.instances:,}] round {round_ + 1}/{rounds} done")


def dcmtk_interleaved(runs: list[ServerRun], pop: Population, runs_each: int) -> None:
    live = [r for r in runs if not r.error and r.running is not None]
    for run in live:
        run.dcmtk = DcmtkTiming()
    for _ in range(runs_each):
        for run in live:
            assert run.running is not None and run.dcmtk is not None
            one = time_dcmtk(run.running.port, queries(pop)[0], 1)
            run.dcmtk.startup += one.startup
            run.dcmtk.echo += one.echo
            run.dcmtk.find += one.find
            run.dcmtk.failures += one.failures


def asyncio_run(coro: Coroutine[Any, Any, T]) -> T:
    """Run the SCU on uvloop when installed, like minipacs itself."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)


# --- report ---------------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value:8.2f}"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def print_size(pop: Population, runs: list[ServerRun], reference: str | None) -> None:
    print(f"\n## {pop.instances:,} instances: {len(pop.patients):,} patients, "
          f"{len(pop.studies):,} studies, {len(pop.series):,} series")
    for run in runs:
        load = f", loaded by C-STORE in {run.load_s:.1f} s" if run.load_s else ""
        loads = (f"; 1-min load average {min(run.loadavg):.2f}-{max(run.loadavg):.2f} while "
                 f"measured" if run.loadavg else "")
        print(f"- {run.server}: {run.description}{load}{loads}")
    ref = next((r for r in runs if r.server == reference and r.results), None)
    versus = f"vs {reference}" if reference else ""
    print(f"\n{'query':30} {'n':>4} {'server':16} {'first med':>9} {'first p95':>9} "
          f"{'total med':>9} {'total p95':>9} {'ms/match':>8} {'cpu/q':>6} {versus:>11}")
    names = [q.name for q in queries(pop)]
    for name in names:
        for run in runs:
            if run.error or not run.results:
                continue
            result = next(r for r in run.results if r.query.name == name)
            t: FindTiming = result.timing
            ratio = ""
            if ref is not None and run is not ref:
                other = next(r for r in ref.results if r.query.name == name).timing
                if other.totals and t.totals:
                    ratio = f"{statistics.median(t.totals) / statistics.median(other.totals):.2f}x"
            if result.error:
                print(f"{result.query.label[:30]:30} {result.query.expected:>4} "
                      f"{run.server:16} ERROR: {result.error}")
                continue
            total = statistics.median(t.totals)
            cpu = f"{t.server_cpu:6.2f}" if t.server_cpu is not None else f"{'-':>6}"
            print(f"{result.query.label[:30]:30} {result.answers:>4} {run.server:16} "
                  f"{ms(statistics.median(t.firsts))} {ms(p95(t.firsts))} {ms(total)} "
                  f"{ms(p95(t.totals))} {total / max(1, result.answers):8.2f} {cpu} "
                  f"{ratio:>11}")
    for run in runs:
        if run.error:
            print(f"{run.server}: NOT MEASURED: {run.error}")
    dcmtk = [r for r in runs if r.dcmtk]
    if dcmtk:
        print(f"\nDCMTK processes, wall ms (median of {len(dcmtk[0].dcmtk.find)}; "  # type: ignore[union-attr]
              f"findscu = the PatientID query):")
        print(f"{'server':16} {'start':>8} {'echoscu':>8} {'findscu':>8} "
              f"{'find-echo':>9} {'failed':>6}")
        for run in dcmtk:
            d = run.dcmtk
            assert d is not None
            start, echo, find = (statistics.median(v) for v in (d.startup, d.echo, d.find))
            print(f"{run.server:16} {ms(start)} {ms(echo)} {ms(find)} {find - echo:9.2f} "
                  f"{d.failures:>6}")


def print_targets(by_size: dict[int, list[ServerRun]], compare: int, big: int) -> None:
    print("\n## Targets")
    small = {r.server: r for r in by_size.get(compare, [])}
    mine, orthanc = small.get("minipacs"), small.get("orthanc")
    if mine and orthanc and mine.results and orthanc.results:
        for a, b in zip(mine.results, orthanc.results, strict=True):
            if a.error or b.error:
                continue
            x, y = statistics.median(a.timing.totals), statistics.median(b.timing.totals)
            verdict = "ok" if x <= y else "MISSED"
            print(f"{compare:,} {a.query.name:10} minipacs {x:.2f} ms <= orthanc {y:.2f} ms: "
                  f"{verdict}")
    for run in by_size.get(big, []):
        if run.server != "minipacs" or not run.results:
            continue
        for r in run.results:
            if r.error:
                print(f"{big:,} {r.query.name:10} ERROR {r.error}")
                continue
            med, high = statistics.median(r.timing.totals), p95(r.timing.totals)
            verdict = "ok" if med <= TARGET_MEDIAN_MS and high <= TARGET_P95_MS else "MISSED"
            print(f"{big:,} {r.query.name:10} median {med:.2f} ms <= {TARGET_MEDIAN_MS:g}, "
                  f"p95 {high:.2f} ms <= {TARGET_P95_MS:g}: {verdict}")


# --- main -----------------------------------------------------------------------------------


def run_size(size: int, args: argparse.Namespace, root: Path,
             registry: list[Running]) -> list[ServerRun]:
    pop = build(size)
    runs: list[ServerRun] = []
    folder = root / f"n{size}"
    folder.mkdir()
    try:
        if size <= args.compare_max:
            progress(f"[{size:,}] writing {size:,} files")
            files = folder / "files"
            write_files(pop, files)
            kinds: dict[str, ServerKind] = {"minipacs": MinipacsFind(),
                                            "orthanc": OrthancFind(), "qrscp": QrscpFind()}
            for name in args.servers:
                kind = kinds[name]
                if (why := kind.available()) is not None:
                    progress(f"[{size:,}] {name}: skipped ({why})")
                    continue
                runs.append(start_server(kind, folder / name, files, pop, args, registry))
            shutil.rmtree(files, ignore_errors=True)
        if "minipacs" in args.servers and (size > args.compare_max or args.also_loaded):
            database = folder / "loaded.db"
            progress(f"[{size:,}] populate_index: loading {size:,} instances")
            stats = load(f"sqlite:///{database}", size, population=pop, progress=progress)
            progress(f"[{size:,}] loaded in {stats.total_s:.1f} s "
                     f"({stats.instances / stats.insert_s:,.0f} instances/s)")
            label = "minipacs" if size > args.compare_max else "minipacs/loader"
            pg_url = None
            if args.databases is not None:  # the same index, copied to PostgreSQL (before
                pg_url = args.databases.create()  # a server uses it: db copy would refuse)
                progress(f"[{size:,}] minipacs db copy of the loaded index to PostgreSQL")
                seconds = copy_index(database, pg_url, folder / "copy")
                progress(f"[{size:,}] copied in {seconds:.1f} s")
                print(f"[{size:,}] minipacs db copy SQLite -> PostgreSQL: {seconds:.1f} s")
            runs.append(start_server(MinipacsFind(database, label), folder / "minipacs-loaded",
                                     None, pop, args, registry))
            if pg_url is not None:
                runs.append(start_server(MinipacsFindOnDatabase(pg_url, f"{label}/pg"),
                                         folder / "minipacs-pg", None, pop, args, registry))
            if args.other is not None:  # its own loader: the schemas may differ
                other_db = folder / "loaded-other.db"
                progress(f"[{size:,}] populate_index of {args.other}: loading")
                load_other(args.other, other_db, size)
                runs.append(start_server(MinipacsFind(other_db, f"{label}-other", args.other),
                                         folder / "minipacs-other", None, pop, args, registry))
        progress(f"[{size:,}] measuring: {args.reps} x {len(queries(pop))} queries per server")
        measure_interleaved(runs, pop, args)
        if args.dcmtk_runs:
            progress(f"[{size:,}] {args.dcmtk_runs} DCMTK runs per server")
            dcmtk_interleaved(runs, pop, args.dcmtk_runs)
    finally:
        for run in runs:
            if run.running is not None and run.running in registry:
                stop(run.running)
                registry.remove(run.running)
        shutil.rmtree(folder, ignore_errors=True)
    print_size(pop, runs, "orthanc" if size <= args.compare_max else None)
    sys.stdout.flush()
    return runs


def load_other(checkout: Path, database: Path, size: int) -> None:
    """Fill `database` with the population of `size` by the loader of another checkout."""
    argv = [sys.executable, str(checkout / "benchmarks" / "populate_index.py"),
            f"sqlite:///{database}", "--instances", str(size)]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          env=minipacs_env(checkout), timeout=STORE_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"populate_index of {checkout} failed: "
                           f"{done.stderr.decode(errors='replace')[-500:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,1000000",
                        help="index sizes in instances, comma-separated (multiples of 200)")
    parser.add_argument("--servers", default="minipacs,orthanc,qrscp",
                        help="subset of minipacs,orthanc,qrscp")
    parser.add_argument("--compare-max", type=int, default=10_000,
                        help="largest size at which every server gets the files by C-STORE")
    parser.add_argument("--also-loaded", action=argparse.BooleanOptionalAction, default=True,
                        help="at comparison sizes, also measure minipacs on a loader-built index")
    parser.add_argument("--reps", type=int, default=200, help="repetitions per query")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured repetitions first")
    parser.add_argument("--rounds", type=int, default=10,
                        help="the repetitions are split into this many rounds, servers in turn")
    parser.add_argument("--dcmtk-runs", type=int, default=20,
                        help="findscu/echoscu runs per server (0: none)")
    parser.add_argument("--max-pdu", type=int, default=131072)
    parser.add_argument("--tmpdir", default=None, help="where the temp dir goes")
    parser.add_argument("--database-url", default=None, metavar="URL",
                        help="also minipacs on PostgreSQL: the loaded index copied into a "
                             "scratch database beside the one named (needs CREATEDB)")
    parser.add_argument("--other", type=Path, default=None,
                        help="another minipacs checkout, measured beside this one on the same "
                             "loader-built index (A/B of a change under the same load)")
    args = parser.parse_args(argv)
    args.databases = ScratchDatabases(args.database_url) if args.database_url else None
    if args.other is not None:
        args.other = args.other.resolve()
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    sizes = [int(s) for s in args.sizes.split(",")]

    print("# C-FIND benchmark")
    print(f"{machine()}")
    print(f"client: minipacs asyncio SCU, Study Root, one association per server and round; "
          f"{args.reps} reps per query after {args.warmup} warm-up, in {args.rounds} rounds "
          f"taking the servers in turn; times in ms from sending "
          f"the C-FIND-RQ to the first / the final C-FIND-RSP; ms/match = total median / "
          f"answers; cpu/q = server CPU ms per query (all threads, from /proc)")
    registry: list[Running] = []
    by_size: dict[int, list[ServerRun]] = {}
    try:
        with workspace(args.tmpdir, "findbench-") as root:
            for size in sizes:
                by_size[size] = run_size(size, args, root, registry)
    finally:
        for running in registry:
            stop(running)
        if args.databases is not None:
            args.databases.close()
    print_targets(by_size, args.compare_max, max(sizes))
    failed = any(run.error or any(r.error for r in run.results)
                 for runs in by_size.values() for run in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
