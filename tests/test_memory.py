"""app/memory.py: the malloc arenas of worker threads are bounded (issue 13 item 9).

Each case runs in a fresh interpreter (the arena limit is per process and only binds arenas
created after it), starts eight threads that allocate at the same time and counts the
arenas in glibc's malloc_info report.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from typing import Final

import pytest

from minipacs.app import memory
from tests.support import WAIT, minipacs_env

THREADS: Final = 8

CHILD: Final = r"""
import ctypes, ctypes.util, re, sys, tempfile, threading
from minipacs.app import memory

if sys.argv[1] == "limit":
    assert memory.limit_arenas()
allocated, done = threading.Barrier(THREADS + 1), threading.Event()

def work():
    held = [bytearray(4096) for _ in range(64)]  # from malloc: past pymalloc's 512 bytes
    allocated.wait(WAIT)
    done.wait(WAIT)
    del held

threads = [threading.Thread(target=work) for _ in range(THREADS)]
for thread in threads:
    thread.start()
allocated.wait(WAIT)  # every thread alive and holding its allocations now
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.NamedTemporaryFile() as report:
    stream = libc.fopen(report.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(len(re.findall(rb"<heap nr=", report.read())))
done.set()
for thread in threads:
    thread.join(WAIT)
memory.trim()
""".replace("THREADS", str(THREADS)).replace("WAIT", str(WAIT))

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="malloc arenas are glibc's")


def arenas(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], env=minipacs_env(),
                          capture_output=True, text=True, timeout=WAIT * 3, check=False)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@glibc_only
def test_worker_threads_share_two_arenas_once_limited() -> None:
    assert arenas("free") > 2  # unlimited: a thread allocating gets an arena of its own
    assert arenas("limit") <= memory.ARENAS

