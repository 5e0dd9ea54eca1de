"""`python -m tests.reliability.memprobe FOLDER SECONDS serve --config ...`: leak hunting.

Runs the `minipacs` command in this process under tracemalloc, and every SECONDS writes to
FOLDER what grew since the first snapshot: the allocation sites by size, the live objects by
type (objgraph-style counts from the garbage collector), the asyncio tasks, and the size of
the `warnings` registries (which keep one entry per distinct warning text).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Final

FRAMES: Final = 12
STARTUP: Final = 5.0  # seconds before tracing starts
TOP: Final = 25


def _types() -> Counter[str]:
    return Counter(type(obj).__qualname__ for obj in gc.get_objects())


def _registries() -> int:
    return sum(len(getattr(module, "__warningregistry__", {}) or {})
               for module in list(sys.modules.values()))


def _tasks() -> str:
    loops = [obj for obj in gc.get_objects() if isinstance(obj, asyncio.AbstractEventLoop)]
    count = 0
    for loop in loops:
        try:
            count += len(asyncio.all_tasks(loop))
        except RuntimeError:
            continue
    return str(count)


def _write(folder: Path, number: int, first: tracemalloc.Snapshot, types0: Counter[str]) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])
    types = _types()
    current, peak = tracemalloc.get_traced_memory()
    lines = [f"snapshot {number} at {time.strftime('%H:%M:%S')}: traced {current / 2**20:.1f} MiB "
             f"(peak {peak / 2**20:.1f}), warnings registry entries {_registries()}, "
             f"asyncio tasks {_tasks()}", "", "grown since the first snapshot, by line:"]
    for stat in snapshot.compare_to(first, "lineno")[:TOP]:
        lines.append(f"  {stat}")
    lines += ["", "grown since the first snapshot, by traceback (top 5):"]
    for stat in snapshot.compare_to(first, "traceback")[:5]:
        lines.append(f"  {stat.size_diff / 1024:+.1f} KiB in {stat.count_diff:+d} blocks")
        lines += [f"      {frame}" for frame in stat.traceback.format()[-FRAMES * 2:]]
    lines += ["", "object counts grown since the first snapshot:"]
    growth = Counter({name: count - types0.get(name, 0) for name, count in types.items()})
    lines += [f"  {name}: {types[name]} ({diff:+d})" for name, diff in growth.most_common(TOP)]
    (folder / f"{number:04d}.txt").write_text("\n".join(lines) + "\n")


def _probe(folder: Path, every: float) -> None:
    # Trace from when the server runs: what it allocates while serving is what may leak,
    # and tracing its imports too would slow its start tenfold.
    time.sleep(STARTUP)
    tracemalloc.start(FRAMES)
    gc.collect()
    first = tracemalloc.take_snapshot()
    types0 = _types()
    number = 0
    while True:
        time.sleep(every)
        number += 1
        gc.collect()
        _write(folder, number, first, types0)


def main() -> int:
    folder, every, *argv = sys.argv[1:]
    Path(folder).mkdir(parents=True, exist_ok=True)
    threading.Thread(target=_probe, args=(Path(folder), float(every)), daemon=True).start()
    from minipacs.cli import main as minipacs

    return minipacs(argv)


if __name__ == "__main__":
    sys.exit(main())
