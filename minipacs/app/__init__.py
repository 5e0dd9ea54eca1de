"""Composition root: configuration → adapters, services, server (DESIGN "The picture").

Only this package knows every concrete class. It is split by what a command needs, so that
an SCU command does not import the index: `daemon` (serve), `scu` (echo, store, find),
`retrieve_scu` (move, get, peers check), `commit` (the commitment SCU), `ops` (database
maintenance), `copying` (db copy) and `worklist`. Each command of `minipacs.cli` imports the
one it needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class UsageError(Exception):
    """An operation refused as asked: the command line exits 2 with this one line."""


class OperationFailed(Exception):
    """An operation that could not be done: the command line exits 1 with this one line."""


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when it is installed (DESIGN §15), the standard one otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop
