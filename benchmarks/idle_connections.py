#!/usr/bin/env python3
"""What idle clients cost the server: RSS per silent socket and per idle association, and a
fresh client's C-ECHO time while they are all held (issue 13 item 3).

Starts `python -m minipacs serve` on 127.0.0.1 (its own temp folder), measures its RSS, opens
`--silent` TCP connections that send nothing and `--idle` associations (Verification) that
stay open doing nothing, measures again, then times C-ECHOs through a new association.
Everything it starts is stopped and its temp folder removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from minipacs.app.scu import _echo  # noqa: E402
from minipacs.net.client import association  # noqa: E402
from minipacs.proto.negotiation import build_associate_rq  # noqa: E402
from minipacs.proto.sop import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION  # noqa: E402

LISTENING: Final = re.compile(r"listening on [^ ]+:(\d+)")
STARTUP: Final = 30.0


def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB (Linux /proc)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    assert match, "no VmRSS"
    return int(match[1])


def settle_rss(pid: int) -> int:
    """The RSS once it stops moving (the server finished the work just handed to it)."""
    last = rss_kib(pid)
    for _ in range(50):  # at most ~5 s
        time.sleep(0.1)
        now = rss_kib(pid)
        if abs(now - last) < 64:
            return now
        last = now
    return last


@contextlib.contextmanager
def server(folder: Path, limits: dict[str, int | float]):  # type: ignore[no-untyped-def]
    lines = ["listen: {host: 127.0.0.1, port: 0}",
             f"storage: {{root: {folder / 'store'}, fsync: false}}",
             f"database: {{url: 'sqlite:///{folder / 'index.db'}'}}",
             "logging: {level: INFO}",
             "limits: {" + ", ".join(f"{k}: {v}" for k, v in limits.items()) + "}"]
    config = folder / "minipacs.yaml"
    config.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "minipacs", "serve", "--config", str(config)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + STARTUP
        port = None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError("the server exited before listening")
            if match := LISTENING.search(line):
                port = int(match[1])
        if port is None:
            raise RuntimeError("the server did not listen in time")
        # Keep reading its log, or a full pipe would stall the server.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def hold(port: int, silent: int, idle: int, echoes: int, pid: int) -> dict[str, float]:
    request = build_associate_rq("IDLER", "ANY-SCP", [(VERIFICATION, [IMPLICIT_VR_LITTLE_ENDIAN])])
    figures: dict[str, float] = {}
    base = await asyncio.to_thread(settle_rss, pid)
    figures["rss_start_mib"] = base / 1024
    async with contextlib.AsyncExitStack() as stack:
        writers = []
        for _ in range(silent):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
        stack.callback(lambda: [w.close() for w in writers])
        with_silent = await asyncio.to_thread(settle_rss, pid)
        figures["kib_per_silent_socket"] = (with_silent - base) / max(silent, 1)
        for _ in range(idle):
            await stack.enter_async_context(association("127.0.0.1", port, request))
        with_idle = await asyncio.to_thread(settle_rss, pid)
        figures["kib_per_idle_association"] = (with_idle - with_silent) / max(idle, 1)
        figures["rss_held_mib"] = with_idle / 1024
        times = []
        for _ in range(echoes):
            started = time.perf_counter()
            ok, message = await _echo("127.0.0.1", port, "PROBE", "ANY-SCP", 5.0, 16384)
            if not ok:
                raise RuntimeError(message)
            times.append((time.perf_counter() - started) * 1000)
        figures["echo_median_ms"] = statistics.median(times)
        figures["echo_max_ms"] = max(times)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--silent", type=int, default=1000, help="silent TCP connections")
    parser.add_argument("--idle", type=int, default=200, help="idle associations")
    parser.add_argument("--echoes", type=int, default=20, help="C-ECHOs timed while held")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * (args.silent + args.idle) + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    limits = {"max_handshakes": args.silent + 10, "max_associations": args.idle + 10,
              "max_associations_per_address": args.idle + 10, "handshake_timeout": 600,
              "artim_timeout": 600, "idle_timeout": 600}
    with tempfile.TemporaryDirectory(prefix="minipacs-idle-") as tmp, \
            server(Path(tmp), limits) as (proc, port):
        figures = asyncio.run(hold(port, args.silent, args.idle, args.echoes, proc.pid))
    print(f"silent sockets: {args.silent}, idle associations: {args.idle}")
    for name, value in figures.items():
        print(f"  {name:26} {value:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
