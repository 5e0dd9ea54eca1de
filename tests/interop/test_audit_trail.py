"""The audit trail of a real server (issue 12 item 4): one JSON line per security-relevant
event — associations accepted and refused, instances stored, queries, retrieves, deletes
and maintenance — parseable, in the PS3.15 A.5 vocabulary, with no passcode or token."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from minipacs.proto.sop import STUDY_ROOT_QR_FIND
from minipacs.proto.status import Status
from minipacs.security.passwords import hash_password
from tests.interop.dicomfiles import write_part10
from tests.interop.retrieve_support import CALLING, py_get
from tests.interop.test_identity import present
from tests.support import (
    LOOPBACK,
    UID_ROOT,
    make_config,
    make_ct,
    pynetdicom_ae,
    pynetdicom_find,
    run_dcmtk,
    run_minipacs,
    running_server,
)
from tests.tokens import signing_key

PASSCODE = "wonderland-0451"
WRONG = "guessed-passcode-77"


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def kind(message: dict[str, Any]) -> tuple[str, int]:
    ident = message["EventIdentification"]
    return ident["EventID"]["displayName"], ident["EventOutcomeIndicator"]


def _find(port: int) -> int:
    ae = pynetdicom_ae(CALLING)
    ae.add_requested_context(STUDY_ROOT_QR_FIND)
    assoc = ae.associate(LOOPBACK, port)
    assert assoc.is_established
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = "LOOP-1"
        query.StudyInstanceUID = ""
        answers, _, final = pynetdicom_find(assoc, query, STUDY_ROOT_QR_FIND, msg_id=1,
                                            context_id=1)
        assert final.Status == Status.SUCCESS
        return len(answers)
    finally:
        assoc.release()


async def test_one_line_per_event(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    key = signing_key(tmp_path)
    token = key.token("alice")
    config = make_config(
        tmp_path,
        peers={CALLING: {"host": LOOPBACK, "port": 104}},
        security={"unknown_aes": ["echo", "store"], "identity": "optional",
                  "users": {"alice": {"password": hash_password(PASSCODE, cost=(16, 1, 1))}},
                  "jwt": key.jwt_config(), "allow_passwords_without_tls": True,
                  "failure_delay": 0},
        logging={"audit": str(audit)})
    files = []
    for index in (1, 2):
        path = tmp_path / f"ct{index}.dcm"
        write_part10(make_ct(4096, index=index), path)
        files.append(str(path))
    async with running_server(config) as server:
        port = server.port
        echo = await run_dcmtk("echoscu", "-aet", "MODALITY", LOOPBACK, str(port))
        assert echo.returncode == 0
        refused = await asyncio.to_thread(present, port, 2, b"alice", WRONG.encode())
        assert refused[0] is not None
        with_token = await asyncio.to_thread(present, port, 5, token.encode())
        assert with_token[0] is None
        store = await run_dcmtk("storescu", "-aet", "MODALITY", "-usr", "alice", "-pwd",
                                PASSCODE, LOOPBACK, str(port), *files)
        assert store.returncode == 0, store.stdout + store.stderr
        assert await asyncio.to_thread(_find, port) == 1
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = f"{UID_ROOT}.1"
        got = await asyncio.to_thread(py_get, port, identifier, storage=[CTImageStorage])
        assert len(got.stored) == 2
    # A clean shutdown has written everything.
    events = lines(audit)
    assert Counter(kind(m) for m in events) == {
        ("User Authentication", 0): 5,  # associations: echo, token, store, find, get
        ("User Authentication", 4): 1,  # the wrong passcode
        ("DICOM Instances Transferred", 0): 2,  # stored, then retrieved
        ("Query", 0): 1,
    }, events
    by_name: dict[str, list[dict[str, Any]]] = {}
    for message in events:
        by_name.setdefault(kind(message)[0], []).append(message)
    refusal = next(m for m in by_name["User Authentication"]
                   if m["EventIdentification"]["EventOutcomeIndicator"] == 4)
    assert refusal["EventIdentification"]["EventOutcomeDescription"] == \
        "user identity: wrong passcode for user 'alice'"
    assert refusal["TLS"] is False
    users = {m["ActiveParticipant"][0].get("UserName") for m in by_name["User Authentication"]}
    assert users == {None, "alice"}
    stored, retrieved = sorted(by_name["DICOM Instances Transferred"],
                               key=lambda m: m["EventIdentification"]["EventActionCode"])
    assert stored["EventIdentification"]["EventActionCode"] == "C"
    assert stored["ActiveParticipant"][0]["UserName"] == "alice"
    assert stored["ActiveParticipant"][0]["AlternativeUserID"] == "AETITLES=MODALITY"
    (study,) = stored["ParticipantObjectIdentification"]
    assert (study["ParticipantObjectID"], study["ParticipantObjectDescription"]) == (
        f"{UID_ROOT}.1", {"NumberOfInstances": 2})
    assert retrieved["ParticipantObjectIdentification"][0]["ParticipantObjectDetail"][
        "Completed"] == 2
    assert retrieved["ActiveParticipant"][2]["UserID"] == CALLING  # C-GET: to the requestor
    (query,) = by_name["Query"][0]["ParticipantObjectIdentification"]
    assert query["ParticipantObjectQuery"] == {"PatientID": "LOOP-1"}
    assert query["ParticipantObjectDetail"]["NumberOfMatches"] == 1
    text = audit.read_text(encoding="utf-8")
    for secret in (PASSCODE, WRONG, token, token.split(".")[2]):
        assert secret not in text

    # Maintenance and deletes from the command line land in the same trail.
    source = str(config.source)
    check = await run_minipacs("db", "check", "--config", source)
    assert check.returncode == 0, check.stderr
    delete = await run_minipacs("delete", "--study", f"{UID_ROOT}.1", "--yes",
                                "--config", source)
    assert delete.returncode == 0, delete.stderr
    later = lines(audit)[len(events):]
    assert [kind(m) for m in later] == [("Application Activity", 0),
                                        ("DICOM Study Deleted", 0)]
    assert later[0]["EventIdentification"]["EventTypeCode"][0]["displayName"] == "db check"
    deleted = later[1]["ParticipantObjectIdentification"][0]
    assert deleted["ParticipantObjectID"] == f"{UID_ROOT}.1"
    assert deleted["ParticipantObjectDetail"] == {"NumberOfInstances": 2}
