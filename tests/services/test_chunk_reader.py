"""ChunkReader asks for what is left of a real file, not a whole chunk (retrieve speed)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import pytest

from minipacs.services.store_sender import ChunkReader

HEADER = b"PREAMBLE"  # bytes before the data set, skipped by the opener
CHUNK = 16


class Recording(io.RawIOBase):
    """A real file that records the size of every read asked of it."""

    def __init__(self, path: Path, offset: int) -> None:
        self._fp = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._fp.seek(offset)
        self.asked: list[int] = []

    def read(self, size: int = -1) -> bytes:
        self.asked.append(size)
        return self._fp.read(size)

    def fileno(self) -> int:
        return self._fp.fileno()

    def tell(self) -> int:
        return self._fp.tell()

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fp.close()
        super().close()


async def read_all(tmp_path: Path, size: int) -> tuple[bytes, list[bytes], Recording]:
    data = bytes(i % 251 for i in range(size))
    path = tmp_path / f"file{size}"
    path.write_bytes(HEADER + data)
    opened: list[Recording] = []

    def opener() -> BinaryIO:
        opened.append(Recording(path, len(HEADER)))
        return opened[0]  # type: ignore[return-value]

    reader = await ChunkReader.open(opener, chunk_size=CHUNK)
    chunks = [chunk async for chunk in reader]
    reader.close()
    return data, chunks, opened[0]


@pytest.mark.parametrize(("size", "asked"), [
    (0, [1]),  # an empty data set: one read that finds the end
    (5, [5]),  # smaller than a chunk: exactly its size, one thread hop
    (CHUNK, [CHUNK]),  # exactly one chunk: no second read for an empty end
    (2 * CHUNK + 8, [CHUNK, CHUNK, 8]),  # the last read asks only for the rest
])
async def test_reads_ask_for_what_is_left(tmp_path: Path, size: int, asked: list[int]) -> None:
    data, chunks, file = await read_all(tmp_path, size)
    assert b"".join(chunks) == data
    assert file.asked == asked
    assert file.closed  # closed as soon as the end was read


async def test_a_stream_without_a_file_reads_whole_chunks() -> None:
    """No fileno (e.g. a BytesIO): the size is unknown, chunks are asked whole."""
    data = bytes(range(40))
    reader = await ChunkReader.open(lambda: io.BytesIO(data), chunk_size=CHUNK)
    chunks = [chunk async for chunk in reader]
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks] == [CHUNK, CHUNK, 8]


async def test_a_file_shorter_than_its_size_ends_at_the_short_read(tmp_path: Path) -> None:
    """The file shrinks after it was opened: the reader stops at what is there."""
    path = tmp_path / "shrinks"
    path.write_bytes(HEADER + bytes(3 * CHUNK))

    def opener() -> BinaryIO:
        fp = open(path, "rb", buffering=0)  # noqa: SIM115 - handed to the reader
        fp.seek(len(HEADER))
        return fp

    reader = await ChunkReader.open(opener, chunk_size=CHUNK)
    with path.open("r+b") as fp:
        fp.truncate(len(HEADER) + CHUNK + 4)
    chunks = [chunk async for chunk in reader]
    assert [len(c) for c in chunks] == [CHUNK, 4]
