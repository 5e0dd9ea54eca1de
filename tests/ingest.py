"""C-STORE through the real `StoreService`, without a network: the ingest path tests share.

The service gets a data set as a stream of PDV-sized fragments from a one-context channel,
exactly as the dispatcher hands it over, so spool, parse, commit and index all run as in the
server (DESIGN §10) with the real store, parser and index.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from minipacs.index import AttributeReader
from minipacs.ports import AssociationInfo, AssociationUsage, Index, Request, Storage
from minipacs.proto.dimse import CStoreRQ, CStoreRSP
from minipacs.proto.negotiation import AcceptedContext, Negotiated
from minipacs.proto.status import Status
from minipacs.services.store import StoreService

CONTEXT_ID: Final = 1
FRAGMENT: Final = 16 * 1024


class BytesStream:
    """`ports.DataStream` over bytes in memory, in PDV-sized fragments."""

    def __init__(self, data: bytes, fragment: int = FRAGMENT) -> None:
        self._data = memoryview(data)
        self._fragment = fragment

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), self._fragment):
            yield bytes(self._data[start:start + self._fragment])

    async def read_all(self, limit: int) -> bytes:
        return bytes(self._data)

    async def drain(self) -> None:
        return None


class OneContextChannel:
    """The part of `ports.Channel` the store handler uses: the association's info."""

    def __init__(self, calling_ae: str, called_ae: str, context: AcceptedContext,
                 max_pdu_length: int = 16384) -> None:
        self._info = AssociationInfo(calling_ae, called_ae, "127.0.0.1", 40000,
                                     Negotiated({context.context_id: context}, max_pdu_length))
        self.usage = AssociationUsage()

    @property
    def info(self) -> AssociationInfo:
        return self._info


def store_service(storage: Storage, index: Index) -> StoreService:
    """The C-STORE handler as the daemon builds it."""
    return StoreService(storage, index, AttributeReader())


async def c_store(service: StoreService, data: bytes, *, sop_class_uid: str,
                  sop_instance_uid: str, transfer_syntax: str, calling_ae: str = "MODALITY",
                  called_ae: str = "MINIPACS", message_id: int = 1) -> CStoreRSP:
    """One C-STORE of `data` (a data set in `transfer_syntax`); returns the response."""
    context = AcceptedContext(CONTEXT_ID, sop_class_uid, transfer_syntax)
    message = CStoreRQ(message_id=message_id, affected_sop_class_uid=sop_class_uid,
                       affected_sop_instance_uid=sop_instance_uid)
    outcome = await service(OneContextChannel(calling_ae, called_ae, context),
                            Request(context, message, BytesStream(data)))
    assert isinstance(outcome.message, CStoreRSP)
    return outcome.message


async def c_store_ok(service: StoreService, data: bytes, **kwargs: str) -> None:
    """`c_store` that must answer Success."""
    rsp = await c_store(service, data, **kwargs)  # type: ignore[arg-type]
    assert rsp.status == Status.SUCCESS, (rsp.status, rsp.error_comment)
