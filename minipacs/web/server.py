"""The HTTP listener: uvicorn serving the ASGI app inside minipacs' own event loop.

uvicorn's `Server.serve()` would install its own SIGINT/SIGTERM handlers and poll a flag
ten times a second; minipacs owns the signals (graceful, then abort on a second signal), so
only `startup()` (bind, accept) and `shutdown()` (stop accepting, let responses finish for
the grace period, then cancel them) are used, from the daemon's lifecycle. With an
`ssl.SSLContext` it serves HTTPS (the context is uvicorn's for life; the caller makes it
switch to reloaded certificates per connection).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
from typing import Any, Final

import uvicorn

log = logging.getLogger("minipacs.web")

BACKLOG: Final = 512


class HttpServer:
    """One HTTP listener for an ASGI application, started and stopped by the caller."""

    def __init__(self, app: Any, host: str, port: int, *, grace: float = 10.0,
                 ssl: ssl_module.SSLContext | None = None) -> None:
        self._host = host
        self._port = port
        self._ssl = ssl
        self._socket: socket.socket | None = None
        self._config = uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, server_header=False,
            date_header=False,  # the app writes Date itself: no polling loop refreshes it
            timeout_graceful_shutdown=grace, http="httptools", loop="none",
            # Large STOW bodies stream; keep-alive long enough for a viewer's bursts.
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(self._config)

    @property
    def port(self) -> int:
        """The bound port (useful when listening on port 0)."""
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting; raises OSError when the address is taken."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        if not self._config.loaded:
            self._config.load()
        self._config.ssl = self._ssl  # uvicorn wraps each connection in it (None: plain)
        self._server.lifespan = self._config.lifespan_class(self._config)
        await self._server.startup(sockets=[sock])

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting; in-flight responses get `grace` seconds, then are cancelled."""
        if self._socket is None:
            return
        if grace is not None:
            self._config.timeout_graceful_shutdown = grace
        if grace == 0:
            self._server.force_exit = True
        try:
            await self._server.shutdown(sockets=[self._socket])
        except asyncio.CancelledError:
            raise
        except Exception:  # closing must not keep the DIMSE side from shutting down
            log.exception("HTTP listener shutdown failed")
        state = self._server.server_state
        for task in list(state.tasks):  # past the grace period: abort what is left
            task.cancel()
        for connection in list(state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        self._socket = None
