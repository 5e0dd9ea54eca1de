"""Smoke test of the retrieve benchmark: ``retrieve.py --quick`` runs and measures every server.

Run: ``python -m pytest -q benchmarks/test_retrieve_bench.py`` (benchmarks/ is outside the
default testpaths, so CI's time budget does not pay for it). About 10 s.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ingest_servers import ORTHANC

SCRIPT = Path(__file__).resolve().parent / "retrieve.py"
ROW = re.compile(r"^(\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", re.MULTILINE)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=300, check=False)


def test_quick_run_measures_move_and_get_on_every_server() -> None:
    servers = ["minipacs", "qrscp"] + (["orthanc"] if Path(ORTHANC).exists() else [])
    done = run("--quick", "--servers", ",".join(servers))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "--ignore (discards data)" in out and "-pdu 131072" in out
    sections = re.split(r"^## ", out, flags=re.MULTILINE)
    for op in ("MOVE", "GET"):
        section = next(s for s in sections if s.startswith(f"{op}: 20 instances"))
        rows = {m.group(1): float(m.group(2)) for m in ROW.finditer(section)}
        assert set(rows) == set(servers), section
        assert all(rate > 0 for rate in rows.values()), section
    if "orthanc" in servers:
        assert re.search(r"20 move: minipacs \d+ / orthanc \d+ = [\d.]+x", out), out


def test_quick_run_with_write_checks_the_files_that_arrived() -> None:
    done = run("--quick", "--write", "--servers", "minipacs")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "writes each instance to a folder" in done.stdout


def test_unknown_server_is_a_usage_error() -> None:
    done = run("--quick", "--servers", "minipacs,nosuch")
    assert done.returncode == 2
    assert "nosuch" in done.stderr
