"""scripts/fuzz: mutated PDUs through the sans-I/O core in-process, then against a live server.

    scripts/fuzz                       # 1,000,000 in-process cases, then 600 s live
    scripts/fuzz --cases 20000 --live 30 --workers 8
    scripts/fuzz --live 0              # in-process only
    scripts/fuzz --cases 0 --heap 60 --keep DIR   # live only, heap figures every 60 s

Exit status 1 when anything broke its contract (a Finding in-process; a traceback, an
unescaped control character or an unformatted line in the server's log, a failed health
C-ECHO, a server that died, or server bytes that are no valid PDU), 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from minipacs.app import loop_factory
from minipacs.proto.sop import STORAGE_SOP_CLASSES, UNCOMPRESSED_TRANSFER_SYNTAXES

from . import STARTUP_WAIT, memprobe, scratch
from .core import TARGETS, WEIGHTS, Finding
from .live import READ_TIMEOUT, Counts, campaign, server_sections
from .procstat import Sampler, load_average, open_fds, peak_rss_kib, rss_by_mapping, rss_kib

LOG_LINE: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} [A-Z]+ \S+ ")
CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
SAMPLES_SHOWN: Final = 6


def in_process(cases: int, seed: str) -> int:
    """Run `cases` mixed cases through the core; print the figures; the number of findings."""
    names = list(TARGETS)
    weights = [WEIGHTS[name] for name in names]
    picker = random.Random(seed)
    ran: Counter[str] = Counter()
    findings: dict[str, tuple[int, Finding]] = {}
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    for number in range(cases):
        name = picker.choices(names, weights)[0]
        ran[name] += 1
        try:
            TARGETS[name](random.Random(f"{seed}-{name}-{number}"))
        except Finding as finding:
            counts[finding.signature] += 1
            findings.setdefault(finding.signature, (number, finding))
    elapsed = time.perf_counter() - started
    print(f"in-process: {cases:,} cases in {elapsed:.0f} s ({cases / max(elapsed, 1e-9):,.0f}/s), "
          f"seed {seed!r}: " + ", ".join(f"{n} {ran[n]:,}" for n in names))
    for signature, (number, finding) in findings.items():
        print(f"  FINDING x{counts[signature]}: {finding} (first: case {number}, "
              f"target {finding.target}, input {finding.data[:80]!r})")
    if not findings:
        print("  no findings")
    return len(findings)


@contextlib.contextmanager
def _destination() -> Iterator[int]:
    from tests.interop.retrieve_support import py_destination
    from tests.support import free_port

    port = free_port()
    with py_destination(port, list(STORAGE_SOP_CLASSES),
                        syntaxes=list(UNCOMPRESSED_TRANSFER_SYNTAXES)):
        yield port


def live(seconds: float, workers: int, seed: str, keep: Path | None, heap_every: float,
         trace: bool, server_source: Path | None, idle: float) -> int:
    """Fuzz a live `minipacs serve` for `seconds`; print the figures; the number of problems."""
    from tests.support import REPO, ServeProcess, free_port, write_config

    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(scratch(keep, "fuzz-"))
        destination = stack.enter_context(_destination())
        config = write_config(folder, **server_sections(destination, free_port()))
        command = None
        if heap_every:
            command = memprobe.command(folder / "heap", heap_every, trace)
        env = None
        if server_source is not None:  # another revision's minipacs, e.g. for a before/after
            env = {**os.environ, "PYTHONPATH": f"{server_source}{os.pathsep}{REPO}"}
            # -P: not this checkout from the working directory ahead of PYTHONPATH
            command = [sys.executable, "-P", *(command[1:] if command else ["-m", "minipacs"])]
        served = ServeProcess(config, command=command, env=env)
        stack.callback(served.stop)
        served.start(STARTUP_WAIT)
        pid = served.proc.pid
        sampler = Sampler(pid).start()
        load_before = load_average()
        before = (rss_kib(pid), open_fds(pid))
        counts = Counts()
        started = time.monotonic()
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(campaign(served.port, seconds=seconds, workers=workers, seed=seed,
                                counts=counts))
        elapsed = time.monotonic() - started
        if idle:  # the server at rest after the campaign: what stays is not in flight
            time.sleep(idle)
        sampler.stop()
        after = (rss_kib(pid), open_fds(pid))
        where = rss_by_mapping(pid)
        peak = peak_rss_kib(pid)
        alive = served.proc.poll() is None
        served.signal(signal.SIGTERM)
        code = served.wait(timeout=30)
        problems = _report(counts, elapsed, workers, seed, before, after, peak, sampler,
                           where, load_before, alive, code, served.lines)
        (folder / "server.log").write_text("\n".join(served.lines) + "\n", errors="replace")
        for headline in memprobe.first_and_last(folder / "heap"):
            print(f"  heap {headline}")
        if keep:
            print(f"  server log and data kept in {folder}")
        return problems


def _report(counts: Counts, elapsed: float, workers: int, seed: str, before: tuple[int, int],
            after: tuple[int, int], peak: int, sampler: Sampler, where: list[tuple[str, int]],
            load: str, alive: bool, code: int, lines: list[str]) -> int:
    tally = counts.tally
    cases = sum(counts.cases.values())
    scenarios = ", ".join(f"{name} {count:,}" for name, count in counts.cases.items())
    print(f"live: {cases:,} connections ({scenarios}), {counts.messages:,} DIMSE messages, "
          f"{workers} at once, {elapsed:.0f} s, seed {seed!r}, load average before {load}, "
          f"after {load_average()}")
    print(f"  server answered: {dict(tally.pdus)}; final statuses {dict(tally.statuses)}; "
          f"requests ended by an abort or close: {tally.ended}")
    print(f"  requests without an answer within {READ_TIMEOUT:g} s: {dict(tally.silent)}")
    print(f"  health C-ECHO: {counts.echoes} sent, {len(counts.echo_failures)} failed, "
          f"slowest {counts.echo_worst * 1000:.0f} ms")
    print(f"  server RSS {before[0] / 1024:.1f} -> {after[0] / 1024:.1f} MiB "
          f"(peak {peak / 1024:.1f} MiB), open fds {before[1]} -> {after[1]}")
    print(sampler.curve(SAMPLES_SHOWN))
    print("  RSS by mapping at the end: " + ", ".join(f"{name} {kib / 1024:.1f} MiB"
                                                   for name, kib in where))
    problems = _log_problems(lines)
    problems += [f"health C-ECHO failed: {text}" for text in counts.echo_failures[:5]]
    problems += counts.client_errors[:20]
    if not alive:
        problems.append("the server died during the campaign")
    if code != 0:
        problems.append(f"the server exited with {code} after SIGTERM")
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    if not problems:
        print("  no problems: no traceback, every log line formatted and escaped, "
              "every health check answered")
    return len(problems)


def _log_problems(lines: list[str]) -> list[str]:
    """Tracebacks, lines that are not ours (forged or raw), control characters."""
    problems: list[str] = []
    kinds: Counter[str] = Counter()
    for line in lines:
        if CONTROL.search(line):
            kinds[f"control character in a log line: {line[:120]!r}"] += 1
        elif line.startswith("Traceback"):
            kinds["traceback"] += 1
        elif not LOG_LINE.match(line) and not line.startswith((" ", "\t")):
            kinds[f"unformatted line: {line[:120]!r}"] += 1
    for kind, count in kinds.most_common(20):
        problems.append(f"{kind} (x{count})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1_000_000,
                        help="in-process cases (default 1,000,000; 0 skips)")
    parser.add_argument("--live", type=float, default=600.0, metavar="SECONDS",
                        help="seconds against a live server (default 600; 0 skips)")
    parser.add_argument("--workers", type=int, default=16,
                        help="concurrent live connections (default 16)")
    parser.add_argument("--seed", default=str(os.getpid()), help="campaign seed")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the live server's data and log in DIR")
    parser.add_argument("--server-source", type=Path, metavar="DIR",
                        help="run the live server from another checkout's source tree (a "
                             "folder holding its minipacs/ package), e.g. to compare revisions")
    parser.add_argument("--idle", type=float, default=0.0, metavar="SECONDS",
                        help="leave the server at rest this long after the campaign before "
                             "its memory is measured and it is stopped")
    parser.add_argument("--heap", type=float, default=0.0, metavar="SECONDS",
                        help="every SECONDS, write the live server's malloc figures and the "
                             "object counts that grew into heap/ of its folder (leak hunting)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="with --heap: also trace Python allocations (slow)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # pydicom's notes on the hostile values we write
    problems = 0
    if args.cases:
        problems += in_process(args.cases, args.seed)
    if args.live:
        problems += live(args.live, args.workers, args.seed, args.keep, args.heap,
                         args.tracemalloc, args.server_source, args.idle)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
