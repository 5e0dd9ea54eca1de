"""Bound the freed memory glibc malloc keeps in a long-running server (issue 13 item 9).

Data sets are parsed, indexed and written on worker threads (asyncio.to_thread, the index's
SQLite connections). glibc gives a thread that finds an arena locked an arena of its own, up
to eight per core, and each arena keeps the chunks freed in it for later reuse. Measured
under scripts/soak (64 associations, 5 minutes): Python's live blocks and malloc's bytes in
use stayed flat while the free bytes held inside the arenas grew from 6 to 44 MiB, and RSS
with them. Two arenas, trimmed every minute, keep that bounded. Elsewhere than glibc (musl,
macOS) both steps are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import platform
from collections.abc import AsyncIterator
from typing import Final

log = logging.getLogger("minipacs")

M_ARENA_MAX: Final = -8  # glibc <malloc.h>: the mallopt parameter bounding the arenas
ARENAS: Final = 2  # the main arena and one shared by every worker thread
TRIM_EVERY: Final = 60.0  # seconds between malloc_trim calls


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc with mallopt and malloc_trim, else None."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most `arenas` malloc arenas from now on (call before the worker threads start);
    False where that cannot be set."""
    libc = _glibc()
    return libc is not None and libc.mallopt(M_ARENA_MAX, arenas) == 1


def trim() -> None:
    """Hand the free memory at the top of each arena, and whole free pages inside them, back
    to the operating system (blocking: run it off the event loop)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@contextlib.asynccontextmanager
async def trimming(every: float = TRIM_EVERY) -> AsyncIterator[None]:
    """Trim every `every` seconds in the background while the block runs."""
    if _glibc() is None:
        yield
        return

    async def loop() -> None:
        while True:
            await asyncio.sleep(every)
            await asyncio.to_thread(trim)

    task = asyncio.create_task(loop(), name="malloc-trim")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
