"""Reliability tooling shared by the CI tests and the long scripts (scripts/fuzz, crash, soak).

corpus.py (valid seeds), mutate.py (byte and structure mutations), core.py (the in-process
fuzz targets and their oracles), procstat.py (RSS and file descriptors from /proc), and the
drivers behind the scripts: fuzz.py, live.py, crash.py, soak.py.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

STARTUP_WAIT: Final = 60.0  # `minipacs serve` imports all and recovers first: slow when loaded


@contextlib.contextmanager
def scratch(keep: Path | None, prefix: str) -> Iterator[Path]:
    """`keep` (created if needed, left behind), or a temporary folder removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield Path(folder)
