"""QIDO-RS with dicomweb-client against the whole server (HTTP on 127.0.0.1, SQLite file).

Data: study 1 (Doe^Jane, 2024, a CT series of 3 and an MR series of 2 instances), study 2
(Smith^John, 2023, a CT series of 2). The C-FIND matching rules apply unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.web.webdata import ROOT, WebServer, call, image, web_server

STUDY1, STUDY2 = f"{ROOT}.1", f"{ROOT}.2"


def values(answer: dict[str, Any], tag: str) -> list[Any]:
    return list(answer.get(tag, {}).get("Value", []))


def uids(answers: list[dict[str, Any]], tag: str = "0020000D") -> list[str]:
    return sorted(values(a, tag)[0] for a in answers)


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[WebServer]:
    async with web_server(tmp_path) as running:
        await running.store([
            *(image(1, 1, n) for n in (1, 2, 3)),
            *(image(1, 2, n, modality="MR") for n in (1, 2)),
            *(image(2, 1, n, patient="Smith^John", patient_id="P2", study_date="20230101")
              for n in (1, 2)),
        ])
        yield running


async def test_study_search_answers_what_a_study_list_reads(web: WebServer) -> None:
    studies = await call(web.client().search_for_studies)
    assert uids(studies) == [STUDY1, STUDY2]
    first = next(s for s in studies if values(s, "0020000D") == [STUDY1])
    assert values(first, "00100010") == [{"Alphabetic": "Doe^Jane"}]
    assert values(first, "00100020") == ["P1"]
    assert values(first, "00080020") == ["20240315"]
    assert values(first, "00081030") == ["Study 1"]
    assert values(first, "00080050") == ["A1"]
    assert sorted(values(first, "00080061")) == ["CT", "MR"]
    assert values(first, "00201206") == [2] and values(first, "00201208") == [5]
    assert values(first, "00080056") == ["ONLINE"]
    # (dicomweb-client rewrites URLs it reads: the raw answer shows what we sent)
    raw = (await call(requests.get, f"{web.url}/studies", timeout=10)).json()
    assert sorted(values(s, "00081190")[0] for s in raw) == [
        f"{web.url}/studies/{STUDY1}", f"{web.url}/studies/{STUDY2}"]


@pytest.mark.parametrize("key", ["PatientName", "00100010"])
async def test_keyword_and_tag_forms_and_case_insensitive_names(web: WebServer, key: str
                                                                ) -> None:
    found = await call(web.client().search_for_studies, search_filters={key: "doe*"})
    assert uids(found) == [STUDY1]
    found = await call(web.client().search_for_studies, search_filters={"00100020": "P2"})
    assert uids(found) == [STUDY2]


async def test_ranges_lists_and_value_lists(web: WebServer) -> None:
    client = web.client()
    assert uids(await call(client.search_for_studies,
                           search_filters={"StudyDate": "20240101-"})) == [STUDY1]
    assert uids(await call(client.search_for_studies,
                           search_filters={"StudyDate": "20220101-20231231"})) == [STUDY2]
    both = f"{STUDY1},{STUDY2}"
    assert uids(await call(client.search_for_studies,
                           search_filters={"StudyInstanceUID": both})) == [STUDY1, STUDY2]
    backslash = f"{STUDY2}\\1.2.3"
    assert uids(await call(client.search_for_studies,
                           search_filters={"StudyInstanceUID": backslash})) == [STUDY2]
    assert uids(await call(client.search_for_studies,
                           search_filters={"ModalitiesInStudy": "MR,XA"})) == [STUDY1]
    # A series-level key at study level (relational, as PS3.18 allows).
    assert uids(await call(client.search_for_studies,
                           search_filters={"Modality": "MR"})) == [STUDY1]


async def test_includefield_limit_offset(web: WebServer) -> None:
    client = web.client()
    plain = await call(client.search_for_studies)
    assert "00081032" not in plain[0] and "00080090" in plain[0]
    extra = await call(client.search_for_studies, fields=["ProcedureCodeSequence", "00080080"])
    assert "00081032" in extra[0] and "00080080" in extra[0]
    everything = await call(client.search_for_instances, study_instance_uid=STUDY1,
                            fields=["all"])
    assert len(everything) == 5
    assert all("00180050" in s for s in everything)  # SliceThickness: not a default key
    first = await call(client.search_for_studies, limit=1)
    second = await call(client.search_for_studies, limit=1, offset=1)
    assert len(first) == len(second) == 1
    assert uids(first + second) == [STUDY1, STUDY2]
    assert await call(client.search_for_studies, offset=2) == []


async def test_series_and_instance_resources(web: WebServer) -> None:
    client = web.client()
    series = await call(client.search_for_series, study_instance_uid=STUDY1)
    assert uids(series, "0020000E") == [f"{STUDY1}.1", f"{STUDY1}.2"]
    ct = next(s for s in series if values(s, "00080060") == ["CT"])
    assert values(ct, "00201209") == [3] and values(ct, "0008103E") == ["Series 1"]
    every = await call(client.search_for_series)
    assert len(every) == 3 and all("00100010" in s for s in every)  # study keys included
    instances = await call(client.search_for_instances, study_instance_uid=STUDY1,
                           series_instance_uid=f"{STUDY1}.1")
    assert uids(instances, "00080018") == [f"{STUDY1}.1.{n}" for n in (1, 2, 3)]
    assert values(instances[0], "00280010") == [32]
    assert len(await call(client.search_for_instances)) == 7
    assert len(await call(client.search_for_instances, study_instance_uid=STUDY2)) == 2


async def test_fuzzymatching_is_accepted_with_a_warning(web: WebServer) -> None:
    response = await call(requests.get, f"{web.url}/studies",
                          params={"fuzzymatching": "true", "PatientName": "Doe*"}, timeout=10)
    assert response.status_code == 200
    assert "fuzzymatching" in response.headers["Warning"]
    assert len(response.json()) == 1


@pytest.mark.parametrize(("params", "reason"), [
    ({"NoSuchKeyword": "x"}, "unknown attribute"),
    ({"StudyDate": "2024-13-45"}, "StudyDate"),
    ({"limit": "-1"}, "limit"),
    ({"fuzzymatching": "maybe"}, "fuzzymatching"),
    ({"StudyInstanceUID": "1.2.x"}, "UID"),
])
async def test_bad_queries_are_400_with_the_reason(web: WebServer, params: dict[str, str],
                                                   reason: str) -> None:
    response = await call(requests.get, f"{web.url}/studies", params=params, timeout=10)
    assert response.status_code == 400
    assert reason in response.text


async def test_only_json_is_offered(web: WebServer) -> None:
    response = await call(requests.get, f"{web.url}/studies", timeout=10,
                          headers={"Accept": "multipart/related; type=application/dicom+xml"})
    assert response.status_code == 406
