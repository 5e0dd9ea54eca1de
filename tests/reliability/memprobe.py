"""`python -m tests.reliability.memprobe FOLDER SECONDS TRACE serve --config ...`: leak hunting.

Runs the `minipacs` command in this process and every SECONDS writes to FOLDER where its
memory is: malloc's own figures (mallinfo2: bytes in use, free inside its arenas, mmapped),
Python's allocated blocks, the live objects by type that grew (objgraph-style counts from the
garbage collector), the asyncio tasks, and the `warnings` registries (one entry per distinct
warning text). With TRACE=1 tracemalloc also says which lines allocated what grew (slow).
With MEMPROBE_TRIM=1 in the environment every snapshot ends with malloc_trim and the RSS left:
what trimming cannot give back is in use or fragmented, not merely cached by malloc.
Caution: the object counts walk gc.get_objects() from the probe's thread, which can see a
tuple that another thread is still building; CPython 3.11 then fails that build with
"SystemError: bad argument to internal function" (seen once in a soak, a C-MOVE answered
0110 at the second of a snapshot). A failure at a snapshot's time in a --heap run is the probe's.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Final

FRAMES: Final = 12
TOP: Final = 25
STARTUP: Final = 5.0  # seconds before the baseline: the server has started by then
PAGE: Final = os.sysconf("SC_PAGE_SIZE")
TRIM: Final = os.environ.get("MEMPROBE_TRIM") == "1"  # malloc_trim after every snapshot


class _MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (glibc >= 2.33), every field a size_t."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _malloc() -> str:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return "malloc figures unavailable"
    mib = 1 << 20
    return (f"malloc: in use {info.uordblks / mib:.1f} MiB, free inside its arenas "
            f"{info.fordblks / mib:.1f} MiB (arenas {info.arena / mib:.1f} MiB), mmapped "
            f"{info.hblkhd / mib:.1f} MiB in {info.hblks} blocks")


def _types() -> Counter[str]:
    return Counter(type(obj).__qualname__ for obj in gc.get_objects())


def _rss() -> str:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return f"RSS {pages * PAGE / 2**20:.1f} MiB"


def _trim() -> str:
    """Hand malloc's free pages back (glibc malloc_trim): what RSS is left is in use."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return "malloc_trim unavailable"
    return f"after malloc_trim {_rss()}"


def _registries() -> int:
    return sum(len(getattr(module, "__warningregistry__", {}) or {})
               for module in list(sys.modules.values()))


def _tasks() -> int:
    count = 0
    for loop in (obj for obj in gc.get_objects() if isinstance(obj, asyncio.AbstractEventLoop)):
        try:
            count += len(asyncio.all_tasks(loop))
        except RuntimeError:
            continue
    return count


def _write(folder: Path, number: int, first: tracemalloc.Snapshot | None,
           types0: Counter[str]) -> None:
    gc.collect()
    types = _types()
    lines = [f"snapshot {number} at {time.strftime('%H:%M:%S')}: {_rss()}; {_malloc()}; Python "
             f"blocks {sys.getallocatedblocks()}; warnings registry entries {_registries()}; "
             f"asyncio tasks {_tasks()}"]
    if first is not None:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        current, peak = tracemalloc.get_traced_memory()
        lines += [f"traced {current / 2**20:.1f} MiB (peak {peak / 2**20:.1f})", "",
                  "grown since the first snapshot, by line:"]
        lines += [f"  {stat}" for stat in snapshot.compare_to(first, "lineno")[:TOP]]
    lines += ["", "object counts grown since the first snapshot:"]
    growth = Counter({name: count - types0.get(name, 0) for name, count in types.items()})
    lines += [f"  {name}: {types[name]} ({diff:+d})" for name, diff in growth.most_common(TOP)]
    if TRIM:
        lines[0] += f"; {_trim()}"
    (folder / f"{number:04d}.txt").write_text("\n".join(lines) + "\n")


def _probe(folder: Path, every: float, trace: bool) -> None:
    time.sleep(STARTUP)  # trace what serving allocates, not the imports (ten times slower)
    if trace:
        tracemalloc.start(FRAMES)
    gc.collect()
    first = tracemalloc.take_snapshot() if trace else None
    types0 = _types()
    _write(folder, 0, None, types0)
    for number in range(1, 1 << 30):
        time.sleep(every)
        _write(folder, number, first, types0)


def command(folder: Path, every: float, trace: bool) -> list[str]:
    """The command that runs `minipacs` (its arguments follow) under this probe."""
    return [sys.executable, "-m", __name__,
            str(folder), str(every), "1" if trace else "0"]


def first_and_last(folder: Path) -> list[str]:
    """The headline of the first and of the last snapshot written into `folder`."""
    snapshots = sorted(folder.glob("*.txt"))
    return [path.read_text().splitlines()[0] for path in snapshots[:1] + snapshots[-1:]]


def main() -> int:
    folder, every, trace, *argv = sys.argv[1:]
    Path(folder).mkdir(parents=True, exist_ok=True)
    threading.Thread(target=_probe, args=(Path(folder), float(every), trace == "1"),
                     daemon=True).start()
    from minipacs.cli import main as minipacs

    return minipacs(argv)


if __name__ == "__main__":
    sys.exit(main())
