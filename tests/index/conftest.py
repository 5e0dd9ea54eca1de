"""Fixtures for the index tests: a real SQLite file, migrated with Alembic."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from minipacs.index import IndexWriter
from minipacs.index.engine import make_engine
from minipacs.index.migrate import upgrade


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    upgrade(url)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
async def writer(engine: Engine) -> AsyncIterator[IndexWriter]:
    writer = IndexWriter(engine)
    await writer.start()
    yield writer
    await writer.aclose()
