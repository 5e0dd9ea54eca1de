"""Shared loopback fixtures (tests/support.py) and index databases (tests/databases.py)."""

from tests.databases import backend, databases, db_url
from tests.support import assoc_log, dcmtk, server, start_server

__all__ = ["assoc_log", "backend", "databases", "db_url", "dcmtk", "server", "start_server"]
