"""Composition root: configuration → adapters, services, server (DESIGN "The picture").

Only this package knows every concrete class. It is split by what a command needs, so that
an SCU command does not import the index: `daemon` (serve), `scu` (echo, store) and `ops`
(database maintenance). `cli.py` imports the one it needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when it is installed (DESIGN §15), the standard one otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop
