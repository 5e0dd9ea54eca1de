"""C-STORE SCP interop: DCMTK storescu and pynetdicom push every kind of object in every
transfer syntax into the whole server (`app.open_server`); the stored files and index rows
are checked byte for byte and value for value (PS3.4 Annex B, PS3.10 §7.1).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.data import get_charset_files
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

from minipacs.proto.status import Status
from tests.interop.dicomfiles import (
    ROOT,
    SYNTAXES,
    Sent,
    Syntax,
    base_dataset,
    check_dcmtk_tools,
    dataset_bytes,
    encode_dataset,
    kinds_for,
    make_file,
    write_part10,
)
from tests.interop.storecheck import (
    assert_nothing_left,
    assert_stored,
    chunked_sending,
    index_rows,
    own_store,
    pynetdicom_store,
    sha256_file,
    store_server,
    stored_files,
    storescu,
)

CLIENTS = ("storescu", "pynetdicom")


@pytest.fixture(scope="session")
def sent_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Sent]]:
    """Every object in every syntax, made once (pydicom, then DCMTK) for the session."""
    check_dcmtk_tools()
    directory = tmp_path_factory.mktemp("store-files")
    return {syntax.name: [make_file(directory, kind, syntax) for kind in kinds_for(syntax)]
            for syntax in SYNTAXES}


async def send(client: str, port: int, paths: list[Path], syntax: Syntax | None = None) -> None:
    """Send `paths` in one association with `client`; every store must succeed."""
    if client == "storescu":
        await storescu(port, paths, *([syntax.propose] if syntax else []))
        return
    with chunked_sending():
        results = await asyncio.to_thread(pynetdicom_store, port, paths)
    assert results == [(Status.SUCCESS, "")] * len(paths)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("syntax", SYNTAXES, ids=[s.name for s in SYNTAXES])
async def test_every_object_in_every_syntax(tmp_path: Path, sent_files: dict[str, list[Sent]],
                                            syntax: Syntax, client: str) -> None:
    sent = sent_files[syntax.name]
    async with store_server(tmp_path, fsync=True) as server:
        await send(client, server.port, [item.path for item in sent], syntax)
    rows = index_rows(server.db)
    assert sorted(rows) == sorted(item.sop_instance_uid for item in sent)
    for item in sent:
        assert_stored(server.root, rows[item.sop_instance_uid], item)
        # What a viewer would do: the stored file is a valid Part 10 file, pixels included.
        stored = dcmread(server.root / rows[item.sop_instance_uid].storage_key)
        original = dcmread(item.path)
        assert stored == original
    assert_nothing_left(server.root, server.db, keep=list(rows))


# --- character sets -------------------------------------------------------------------------

# PS3.5 §6.1: Specific Character Set decoded into Unicode in the index (PS3.18 F.2 PN form).
GENERATED_NAMES = {
    "latin1": ("ISO_IR 100", "Müller^Jürgen"),
    "utf8": ("ISO_IR 192", "Øyvind^Łukasz=李^明"),
}
PYDICOM_CHARSET_FILES = {
    "japanese-ir87": "chrH31.dcm",  # ISO 2022 IR 87 (kanji, hiragana) after ASCII
    "japanese-ir13": "chrH32.dcm",  # ISO 2022 IR 13 (half-width katakana) + IR 87
    "gb18030": "chrX2.dcm",
    "cyrillic": "chrRuss.dcm",  # ISO_IR 144
    "french": "chrFren.dcm",  # ISO_IR 100
}


def charset_files(directory: Path) -> dict[str, tuple[Path, str]]:
    """Files with non-ASCII names and the Unicode name the index must hold."""
    out = {}
    for variant, (label, (charset, name)) in enumerate(GENERATED_NAMES.items(), 100):
        ds = base_dataset("ct", variant, name=name, charset=charset)
        out[label] = (write_part10(ds, directory / f"{label}.dcm"), name)
    for label, filename in PYDICOM_CHARSET_FILES.items():
        (path,) = get_charset_files(filename)
        out[label] = (Path(path), str(dcmread(path).PatientName))
    return out


@pytest.mark.parametrize("client", CLIENTS)
async def test_character_sets_round_trip_into_unicode(tmp_path: Path, client: str) -> None:
    files = charset_files(tmp_path)
    assert files["japanese-ir87"][1] == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    async with store_server(tmp_path) as server:
        await send(client, server.port, [path for path, _ in files.values()])
    rows = index_rows(server.db)
    for label, (path, name) in files.items():
        row = rows[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
        assert row.patient_name == name, label
        assert row.patient_name_folded == name.casefold(), label


# --- duplicates -----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["keep-first", "replace"])
async def test_resent_instance_follows_duplicate_policy(tmp_path: Path, policy: str) -> None:
    first = write_part10(base_dataset("ct", 7, name="First^Copy"), tmp_path / "first.dcm")
    second = write_part10(base_dataset("ct", 7, name="Second^Copy"), tmp_path / "second.dcm")
    async with store_server(tmp_path, duplicates=policy) as server:
        await send("pynetdicom", server.port, [first])
        (before,) = index_rows(server.db).values()
        await send("pynetdicom", server.port, [second])
    (after,) = index_rows(server.db).values()
    (path,) = stored_files(server.root)  # never two files for one instance
    if policy == "keep-first":
        assert after == before
        assert after.patient_name == "First^Copy"
    else:
        assert after.storage_key != before.storage_key  # a new file, the old one deleted
        assert after.patient_name == "Second^Copy"
    assert path == server.root / after.storage_key
    assert sha256_file(path) == after.checksum
    expected = first if policy == "keep-first" else second
    assert path.read_bytes()[after.dataset_offset:] == dataset_bytes(expected)


@pytest.mark.parametrize("policy", ["keep-first", "replace"])
async def test_same_instance_sent_concurrently_is_indexed_once(tmp_path: Path,
                                                               policy: str) -> None:
    copies = []
    for n in range(8):
        ds = base_dataset("ct", 8, name=f"Copy^{n}")
        copies.append(encode_dataset(ds))
    uid = ds.SOPInstanceUID
    async with store_server(tmp_path, duplicates=policy) as server:
        responses = await asyncio.gather(*(own_store(server.port, CTImageStorage, uid, data)
                                           for data in copies))
    assert [rsp.status for rsp in responses] == [Status.SUCCESS] * len(copies)
    (row,) = index_rows(server.db).values()
    (path,) = stored_files(server.root)  # the other seven files are gone
    assert path == server.root / row.storage_key
    assert sha256_file(path) == row.checksum
    assert path.read_bytes()[row.dataset_offset:] in copies
    assert row.patient_name == str(dcmread(path).PatientName)


# --- concurrency ----------------------------------------------------------------------------


async def test_sixteen_concurrent_associations(tmp_path: Path) -> None:
    associations, per_association = 16, 4
    batches = []
    for a in range(associations):
        paths = []
        for n in range(per_association):
            ds = base_dataset("ct", 1000 + a * per_association + n)
            ds.StudyDate = "2024.03.15"  # ACR-NEMA form: invalid DA, common in old archives
            paths.append(write_part10(ds, tmp_path / f"c{a}-{n}.dcm"))
        batches.append(paths)
    reading_mode = pydicom_config.settings.reading_validation_mode
    async with store_server(tmp_path, fsync=True) as server:
        await asyncio.gather(*(storescu(server.port, paths, "-R", calling=f"SCU{a}")
                               for a, paths in enumerate(batches)))
    # Parsing in parallel threads must leave pydicom's process-wide settings alone (stuck at
    # RAISE, every later slightly invalid value in the process raises instead of warning).
    assert pydicom_config.settings.reading_validation_mode == reading_mode
    rows = index_rows(server.db)  # raises if any instance is indexed twice
    expected = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): a
                for a, paths in enumerate(batches) for p in paths}
    assert sorted(rows) == sorted(expected)
    for uid, a in expected.items():
        assert rows[uid].calling_ae_title == f"SCU{a}"
        assert rows[uid].study_date == "20240315"  # kept and normalised, not dropped
    for row in rows.values():
        assert sha256_file(server.root / row.storage_key) == row.checksum
    assert_nothing_left(server.root, server.db, keep=list(rows))


async def test_slightly_invalid_values_are_stored_and_indexed(tmp_path: Path) -> None:
    # What real archives hold: UID components with leading zeros, ACR-NEMA dates, long names.
    ds = base_dataset("ct", 1200, name="Verylongfamilyname-" * 4 + "^Given")
    uids = {"SOPInstanceUID": f"{ROOT}.07.3", "StudyInstanceUID": f"{ROOT}.07.1",
            "SeriesInstanceUID": f"{ROOT}.07.2"}
    for keyword, uid in uids.items():
        setattr(ds, keyword, uid)
    ds.StudyDate = "2024.03.15"
    path = write_part10(ds, tmp_path / "odd.dcm")
    async with store_server(tmp_path) as server:
        await send("pynetdicom", server.port, [path])
    (row,) = index_rows(server.db).values()
    assert (row.sop_instance_uid, row.study_instance_uid, row.series_instance_uid) == (
        uids["SOPInstanceUID"], uids["StudyInstanceUID"], uids["SeriesInstanceUID"])
    assert row.study_date == "20240315"
    assert row.patient_name == str(ds.PatientName)
    assert read_file_meta_info(server.root / row.storage_key).MediaStorageSOPInstanceUID == \
        uids["SOPInstanceUID"]


# --- refusals -------------------------------------------------------------------------------


async def test_mismatched_instance_uid_is_a900_and_association_goes_on(tmp_path: Path) -> None:
    ds = base_dataset("ct", 20)
    # pynetdicom takes the command's Affected SOP Instance UID from the file meta.
    wrong = write_part10(ds, tmp_path / "wrong.dcm", media_instance_uid=f"{ds.SOPInstanceUID}9")
    good = write_part10(base_dataset("mr", 21), tmp_path / "good.dcm")
    async with store_server(tmp_path) as server:
        with chunked_sending():
            results = await asyncio.to_thread(pynetdicom_store, server.port, [wrong, good])
    (status, comment), (next_status, _) = results
    assert status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "SOP Instance UID" in comment
    assert next_status == Status.SUCCESS
    assert_nothing_left(server.root, server.db,
                        keep=[str(dcmread(good, stop_before_pixels=True).SOPInstanceUID)])


async def test_mismatched_sop_class_is_a900(tmp_path: Path) -> None:
    ds = base_dataset("mr", 22)  # an MR data set announced as CT
    async with store_server(tmp_path) as server:
        rsp = await own_store(server.port, CTImageStorage, ds.SOPInstanceUID, encode_dataset(ds))
    assert rsp.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert rsp.error_comment and "SOP Class UID" in rsp.error_comment
    assert ds.SOPClassUID == MRImageStorage
    assert_nothing_left(server.root, server.db)


async def test_unparseable_data_set_is_c000(tmp_path: Path) -> None:
    ds = base_dataset("ct", 23)
    data = encode_dataset(ds)[:200]  # cut inside an element
    async with store_server(tmp_path) as server:
        rsp = await own_store(server.port, CTImageStorage, ds.SOPInstanceUID, data)
    assert rsp.status == Status.CANNOT_UNDERSTAND
    assert rsp.error_comment
    assert_nothing_left(server.root, server.db)


@pytest.mark.parametrize(("context", "encoded"), [
    (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
    (ImplicitVRLittleEndian, ExplicitVRLittleEndian),
], ids=["implicit-on-explicit", "explicit-on-implicit"])
async def test_data_set_in_another_syntax_than_its_context_is_c000(
        tmp_path: Path, context: str, encoded: str) -> None:
    # Stored as it came, such a file would carry a Transfer Syntax UID that lies about it.
    ds = base_dataset("ct", 25)
    async with store_server(tmp_path) as server:
        rsp = await own_store(server.port, CTImageStorage, ds.SOPInstanceUID,
                              encode_dataset(ds, encoded), transfer_syntax=context)
    assert rsp.status == Status.CANNOT_UNDERSTAND
    assert rsp.error_comment and "VR" in rsp.error_comment
    assert_nothing_left(server.root, server.db)

