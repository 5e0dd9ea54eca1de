"""The C-STORE path on the real adapters: `StoreService` → filesystem store, parser, SqlIndex."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, func, select

from minipacs.config import StorageConfig, load_config
from minipacs.index import IndexWriter, SqlIndex
from minipacs.index.models import Instance
from minipacs.ports import DuplicatePolicy
from minipacs.proto.status import Status
from minipacs.storage import FilesystemStorage, file_checksum
from minipacs.storage.inventory import iter_files
from tests.index.dicomdata import CT_IMAGE_STORAGE, DEFLATED, encode, make_dataset
from tests.ingest import c_store, c_store_ok, store_service


def filesystem(root: Path) -> FilesystemStorage:
    return FilesystemStorage(root, implementation_class_uid="1.2.3",
                             implementation_version_name="T", source_ae_title="MINIPACS")


async def test_store_parse_index_replace(tmp_path: Path, engine: Engine) -> None:
    storage = filesystem(tmp_path / "store")
    ds = make_dataset(1)
    async with SqlIndex(engine, duplicate_policy=DuplicatePolicy.REPLACE) as index:
        service = store_service(storage, index)
        for _ in range(2):  # the same instance sent twice, deflated
            await c_store_ok(service, encode(ds, DEFLATED), sop_class_uid=ds.SOPClassUID,
                             sop_instance_uid=ds.SOPInstanceUID, transfer_syntax=DEFLATED)
    (left,) = iter_files(storage.root)  # the first file went once the row moved
    with engine.connect() as conn:
        row = conn.execute(select(Instance.storage_key, Instance.checksum, Instance.file_size,
                                  Instance.dataset_offset, Instance.transfer_syntax_uid,
                                  Instance.sop_instance_uid)).one()
    path = storage.root / left.key
    assert tuple(row) == (left.key, file_checksum(path), path.stat().st_size,
                          storage.open_dataset(left.key).tell(), DEFLATED, ds.SOPInstanceUID)


async def test_unparseable_data_set_leaves_nothing(tmp_path: Path, engine: Engine) -> None:
    storage = filesystem(tmp_path / "store")
    async with SqlIndex(engine) as index:
        rsp = await c_store(store_service(storage, index), b"\xff" * 64,
                            sop_class_uid=CT_IMAGE_STORAGE, sop_instance_uid="1.2.3",
                            transfer_syntax="1.2.840.10008.1.2.1")
    assert rsp.status == Status.CANNOT_UNDERSTAND
    assert list(iter_files(storage.root)) == []
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Instance)).scalar_one() == 0


def test_the_duplicates_default_is_one(engine: Engine, tmp_path: Path) -> None:
    """Configuration, the index and its writer agree (they once said keep-first/replace)."""
    default = DuplicatePolicy.default()
    assert default is DuplicatePolicy.KEEP_FIRST
    assert StorageConfig(root=tmp_path).duplicates == default
    assert load_config(None).storage.duplicates == default
    assert IndexWriter(engine).duplicate_policy is default
    assert SqlIndex(engine).writer.duplicate_policy is default
