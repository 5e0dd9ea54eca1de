"""The `ports.Index` adapter with the filesystem store: the path C-STORE takes."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from minipacs.index import SqlIndex
from minipacs.index.models import Instance
from minipacs.ports import AddOutcome, DataSetError, FileMeta, InstanceRecord, StoredFile
from minipacs.storage import FilesystemStorage, file_checksum
from tests.index.dicomdata import CT_IMAGE_STORAGE, DEFLATED, encode, make_dataset


def store(storage: FilesystemStorage, data: bytes, instance_uid: str, ts: str) -> StoredFile:
    spool = storage.open_spool(FileMeta(CT_IMAGE_STORAGE, instance_uid, ts, "MOD", "MINIPACS"))
    spool.write(data)
    return spool.commit()


async def test_store_parse_index_replace(tmp_path: Path, engine: Engine) -> None:
    storage = FilesystemStorage(tmp_path / "store", implementation_class_uid="1.2.3",
                                implementation_version_name="T", source_ae_title="MINIPACS")
    ds = make_dataset(1)
    async with SqlIndex(engine) as index:
        keys = []
        for _ in range(2):  # the same instance sent twice
            stored = store(storage, encode(ds, DEFLATED), ds.SOPInstanceUID, DEFLATED)
            attrs = await index.read_attributes(
                partial(storage.open_dataset, stored.key, stored.dataset_offset), DEFLATED)
            assert (attrs.sop_class_uid, attrs.sop_instance_uid) == (
                ds.SOPClassUID, ds.SOPInstanceUID)  # what 0xA900 compares with the command
            result = await index.add_instance(
                InstanceRecord(attrs, stored, DEFLATED, "MOD", "MINIPACS", datetime.now(UTC)))
            if result.replaced_key:
                storage.delete(result.replaced_key)  # only after the commit
            keys.append((stored, result))
    (first, added), (second, replaced) = keys
    assert added.outcome is AddOutcome.ADDED
    assert replaced.outcome is AddOutcome.REPLACED and replaced.replaced_key == first.key
    assert not (tmp_path / "store" / first.key).exists()
    with engine.connect() as conn:
        row = conn.execute(select(Instance.storage_key, Instance.checksum, Instance.file_size,
                                  Instance.dataset_offset, Instance.transfer_syntax_uid)).one()
    path = tmp_path / "store" / second.key
    assert tuple(row) == (second.key, file_checksum(path), path.stat().st_size,
                          second.dataset_offset, DEFLATED)


async def test_unparseable_data_set(tmp_path: Path, engine: Engine) -> None:
    storage = FilesystemStorage(tmp_path, implementation_class_uid="1.2.3",
                                implementation_version_name="T", source_ae_title="MINIPACS")
    stored = store(storage, b"\xff" * 64, "1.2.3", "1.2.840.10008.1.2.1")
    async with SqlIndex(engine) as index:
        with pytest.raises(DataSetError):
            await index.read_attributes(partial(storage.open_dataset, stored.key),
                                        "1.2.840.10008.1.2.1")
