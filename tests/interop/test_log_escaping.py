"""Every line `minipacs serve` writes is one formatted, escaped log line, whatever a peer sends.

pydicom reports odd values it reads (an unknown character set term, an invalid UID) with the
value quoted raw, both as a log record and as a Python warning printed outside the log
format (found by scripts/fuzz): a peer's newline then forged a line, its ESC reached the
operator's terminal. Real sockets, the real `serve` process and its stderr.
"""

from __future__ import annotations

import asyncio
import re
import signal
import warnings
from pathlib import Path
from typing import Final

from pydicom import config as pydicom_config
from pydicom.uid import ExplicitVRLittleEndian

from minipacs.cli.logformat import drop_pydicom_warnings
from minipacs.net.client import association
from minipacs.proto.dimse import CFindRQ, CStoreRQ
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.sop import STUDY_ROOT_QR_FIND
from tests.reliability.corpus import CT, ct, encode, identifier
from tests.support import LOOPBACK, WAIT, serve_process

LOG_LINE: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} [A-Z]+ \S+ ")
UNSAFE: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
HOSTILE: Final = "EVIL\nFAKE LINE\x1b[2J\x9b"


async def send_hostile(port: int) -> None:
    """A C-FIND whose character set term and a C-STORE whose Study Instance UID are hostile."""
    rq = build_associate_rq("HOSTILE", "ANY-SCP", [(STUDY_ROOT_QR_FIND, [ExplicitVRLittleEndian]),
                                                   (CT, [ExplicitVRLittleEndian])])
    with pydicom_config.disable_value_validation():
        query = identifier("STUDY")
        query.SpecificCharacterSet = HOSTILE
        instance = ct(1, study=1, patient=1)
        instance.StudyInstanceUID = "1.2\n3\x1b[2J"
        find_data = encode(query, ExplicitVRLittleEndian)
        store_data = encode(instance, ExplicitVRLittleEndian)
    async with association(LOOPBACK, port, rq, connect_timeout=WAIT,
                           artim_timeout=WAIT) as conn:
        find_ctx, store_ctx = (c.context_id for c in conn.info.negotiated.contexts.values())
        find = CFindRQ(message_id=1, affected_sop_class_uid=STUDY_ROOT_QR_FIND)
        store = CStoreRQ(message_id=2, affected_sop_class_uid=CT,
                         affected_sop_instance_uid=str(instance.SOPInstanceUID))
        async with asyncio.timeout(WAIT):
            assert [r async for r in conn.request(find_ctx, find, find_data)]
            assert [r async for r in conn.request(store_ctx, store, store_data)]


def test_library_lines_quoting_peer_values_are_escaped(tmp_path: Path) -> None:
    with serve_process(tmp_path) as served:
        asyncio.run(send_hostile(served.port))
        served.signal(signal.SIGTERM)
        assert served.wait() == 0
    lines = served.lines
    assert any("Unknown encoding 'EVIL\\x0aFAKE LINE\\x1b[2J" in line for line in lines), lines
    for line in lines:
        assert LOG_LINE.match(line), f"not a log line: {line!r}"
        assert not UNSAFE.search(line), f"unescaped control character: {line!r}"


def test_pydicom_warnings_leave_no_registry_entry_per_peer_value() -> None:
    """Python remembers each distinct warning text it printed in the warning module's
    registry, for the life of the process: a peer sending endless distinct odd values grew
    the server's memory. The serve process drops pydicom's warnings (it logs them too)."""
    from pydicom import charset

    with warnings.catch_warnings():
        warnings.simplefilter("default")  # Python's own default for UserWarning
        drop_pydicom_warnings()
        for n in range(200):
            charset.convert_encodings([f"BOGUS {n}"])  # "Unknown encoding 'BOGUS n'"
        registry = getattr(charset, "__warningregistry__", {})
        assert len([key for key in registry if key != "version"]) == 0
