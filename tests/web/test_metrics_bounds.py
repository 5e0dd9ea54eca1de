"""/metrics stays bounded whatever peers send (issue 13 item 9, memory): the calling AE title,
a peer's to choose, labels association counts only for the first 256 distinct titles.

Before: each distinct title added a time series to the registry for the life of the process
(memory and scrape size growing without bound under a peer cycling through titles).
Real sockets: 300 associations with distinct calling AE titles, then a scrape.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

import requests
from prometheus_client.parser import text_string_to_metric_families

from minipacs.proto.pdu import AAssociateAC, AReleaseRP, AReleaseRQ
from minipacs.proto.pdu_codec import encode_pdu
from minipacs.web.metrics import MAX_CALLING_AE_LABELS, OTHER_CALLING_AE
from tests.support import LOOPBACK, associate_rq, association_log, raw_connection, read_pdu
from tests.web.webdata import call, web_server

TITLES: Final = 300
AT_ONCE: Final = 20


async def associate_and_release(port: int, calling: str) -> None:
    async with raw_connection(port) as (reader, writer):
        writer.write(associate_rq(calling))
        assert isinstance(await read_pdu(reader), AAssociateAC)
        writer.write(encode_pdu(AReleaseRQ()))
        assert isinstance(await read_pdu(reader), AReleaseRP)


async def test_calling_ae_labels_are_bounded(tmp_path: Path) -> None:
    async with web_server(tmp_path) as web:
        with association_log() as ended:
            for start in range(0, TITLES, AT_ONCE):
                await asyncio.gather(*(associate_and_release(web.server.port, f"TITLE{n:05d}")
                                       for n in range(start, start + AT_ONCE)))
            await ended.wait_for(TITLES)
        text = (await call(requests.get, f"http://{LOOPBACK}:{web.http_port}/metrics",
                           timeout=10)).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "minipacs_associations_total":
                counts[sample.labels["calling_ae"]] = sample.value
    assert len(counts) == MAX_CALLING_AE_LABELS + 1
    assert counts[OTHER_CALLING_AE] == TITLES - MAX_CALLING_AE_LABELS
    assert sum(counts.values()) == TITLES  # every association still counted
