"""Resident memory and open file descriptors of a process, sampled from /proc (Linux).

A `Sampler` thread records (seconds since start, RSS KiB, open fds) at a fixed interval, so
a long run's report can show the curve, not just two points.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Final

INTERVAL: Final = 1.0


def rss_kib(pid: int) -> int:
    """VmRSS of `pid` in KiB (0 once it has exited)."""
    return _status_field(pid, "VmRSS:")


def peak_rss_kib(pid: int) -> int:
    """VmHWM (the peak RSS) of `pid` in KiB."""
    return _status_field(pid, "VmHWM:")


def open_fds(pid: int) -> int:
    """How many file descriptors `pid` has open (0 once it has exited)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _status_field(pid: int, name: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg has them."""
    try:
        with open("/proc/loadavg", encoding="ascii") as loadavg:
            return " ".join(loadavg.read().split()[:3])
    except OSError:
        return "?"


@dataclass
class Sampler:
    """Samples a process every `interval` seconds in a daemon thread until stopped."""

    pid: int
    interval: float = INTERVAL
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._started = time.monotonic()
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True, name="procstat")
        self._thread.start()
        return self

    def sample(self) -> tuple[float, int, int]:
        point = (time.monotonic() - self._started, rss_kib(self.pid), open_fds(self.pid))
        self.samples.append(point)
        return point

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval * 5)

    def curve(self, points: int = 12) -> str:
        """`points` evenly spaced samples as 't=..s rss=..MiB fds=..' lines."""
        if not self.samples:
            return ""
        step = max(1, len(self.samples) // points)
        chosen = self.samples[::step]
        if chosen[-1] is not self.samples[-1]:
            chosen.append(self.samples[-1])
        return "\n".join(f"  t={t:7.1f}s  rss={rss / 1024:7.1f} MiB  fds={fds}"
                         for t, rss, fds in chosen)


def rss_by_mapping(pid: int, top: int = 6) -> list[tuple[str, int]]:
    """Where the RSS of `pid` lives (KiB): [heap], anonymous mappings (malloc's per-thread
    arenas, large blocks), stacks, and each mapped file; the `top` largest."""
    totals: dict[str, int] = {}
    name = "?"
    try:
        with open(f"/proc/{pid}/smaps", encoding="ascii", errors="replace") as smaps:
            for line in smaps:
                first = line.split(maxsplit=6)
                if "-" in first[0] and len(first) >= 5 and ":" in first[3]:  # a mapping line
                    name = first[5].strip() if len(first) > 5 else "[anonymous]"
                    if name.endswith(".so") or ".so." in name:
                        name = "[shared libraries]"
                elif line.startswith("Rss:"):
                    totals[name] = totals.get(name, 0) + int(first[1])
    except OSError:
        return []
    return sorted(totals.items(), key=lambda item: -item[1])[:top]
