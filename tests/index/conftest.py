"""Fixtures for the index tests: a fresh migrated database per test, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Engine

from minipacs.index import IndexWriter
from tests.databases import backend, databases, db_url, engine  # noqa: F401


@pytest.fixture
async def writer(engine: Engine) -> AsyncIterator[IndexWriter]:  # noqa: F811
    writer = IndexWriter(engine)
    await writer.start()
    yield writer
    await writer.aclose()
