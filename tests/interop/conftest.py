"""Shared loopback fixtures (defined in tests/support.py)."""

from tests.support import assoc_log, dcmtk, server, start_server

__all__ = ["assoc_log", "dcmtk", "server", "start_server"]
