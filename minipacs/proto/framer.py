"""Cutting a received byte stream into PDUs (PS3.8 §9.3.1), each header checked first.

`PduFramer.feed()` checks every declared length against what a valid PDU of that type may
have and against our configured maximum *before* any of its body is buffered (DESIGN
principle 4); `decode_pdu` then decodes one whole PDU with pdu_codec's strict decoders.
"""

from __future__ import annotations

import struct
from typing import Final

from .pdu import AbortReason, Pdu, PduType
from .pdu_codec import (
    ASSOCIATE_FIXED_LENGTH,
    FIXED_PDU_LENGTH,
    PDU_HEADER_LENGTH,
    PDV_HEADER_LENGTH,
    PduError,
    decode_body,
)

__all__ = ["DEFAULT_MAX_ASSOCIATION_LENGTH", "PduFramer", "check_pdu_header", "decode_pdu"]

DEFAULT_MAX_ASSOCIATION_LENGTH: Final = 1 << 20  # DCMTK's 128-context RQ exceeds 16 KiB
# What a maximum length of 0 ("no limit", PS3.8 D.1) still allows.
UNLIMITED_PDATA_CAP: Final = 1 << 31

_HEADER = struct.Struct(">BBI")  # PDU type, reserved, PDU length (PS3.8 §9.3.1)
_U32 = struct.Struct(">I")
_P_DATA_TF = int(PduType.P_DATA_TF)
_ASSOCIATE_TYPES = frozenset({PduType.ASSOCIATE_RQ, PduType.ASSOCIATE_AC})
_FIXED_SIZE_TYPES = frozenset(
    {PduType.ASSOCIATE_RJ, PduType.RELEASE_RQ, PduType.RELEASE_RP, PduType.ABORT}
)
_INVALID = AbortReason.INVALID_PDU_PARAMETER_VALUE
_Buffer = bytes | bytearray | memoryview


def check_pdu_header(pdu_type: int, length: int) -> None:
    """Reject a PDU type or length that no valid PDU has, from its header alone (PS3.8 §9.3)."""
    if pdu_type == _P_DATA_TF:  # the hot path first
        if length < PDV_HEADER_LENGTH:
            raise PduError(_INVALID, f"P_DATA_TF of {length} bytes holds no PDV item")
    elif pdu_type in _FIXED_SIZE_TYPES:
        if length != FIXED_PDU_LENGTH:
            raise PduError(_INVALID, f"{PduType(pdu_type).name} length is {length}, "
                                     f"must be {FIXED_PDU_LENGTH}")
    elif pdu_type in _ASSOCIATE_TYPES:
        if length < ASSOCIATE_FIXED_LENGTH:
            raise PduError(_INVALID, f"{PduType(pdu_type).name} of {length} bytes is shorter "
                                     "than its fixed fields")
    else:
        raise PduError(AbortReason.UNRECOGNIZED_PDU, f"unrecognized PDU type {pdu_type:#04x}")


def decode_pdu(data: _Buffer) -> Pdu:
    """Decode exactly one whole PDU, header included (PS3.8 §9.3)."""
    view = memoryview(data)
    if len(view) < PDU_HEADER_LENGTH:
        raise PduError(_INVALID, f"truncated PDU header ({len(view)} bytes)")
    pdu_type, _, length = _HEADER.unpack_from(view)
    check_pdu_header(pdu_type, length)
    if len(view) - PDU_HEADER_LENGTH != length:
        raise PduError(_INVALID, f"{PduType(pdu_type).name} declares {length} bytes "
                                 f"but {len(view) - PDU_HEADER_LENGTH} follow")
    return decode_body(pdu_type, view[PDU_HEADER_LENGTH:])


class PduFramer:
    """Cut a received byte stream into PDUs, checking each header before its body (PS3.8 §9.3.1).

    A bad header is latched: PDUs before it are still returned, then next_pdu() raises.
    """

    __slots__ = ("_buf", "_error", "_max_pdata_length", "_scan", "max_association_length")

    def __init__(self, max_pdata_length: int,
                 max_association_length: int = DEFAULT_MAX_ASSOCIATION_LENGTH) -> None:
        self._buf = bytearray()  # starts at the first PDU not yet returned
        self._scan = 0  # offset of the first PDU header not yet checked
        self._error: PduError | None = None
        self._max_pdata_length = max_pdata_length
        self.max_association_length = max_association_length

    @property
    def max_pdata_length(self) -> int:
        """Our advertised maximum P-DATA-TF variable field length; 0 = no limit (PS3.8 D.1)."""
        return self._max_pdata_length

    @max_pdata_length.setter
    def max_pdata_length(self, value: int) -> None:
        self._max_pdata_length = value
        if self._error is None:  # headers already accepted are checked against the new limit
            self._scan = 0
            self._check_headers()

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a PDU."""
        return len(self._buf)

    def feed(self, data: _Buffer) -> None:
        """Append received bytes; once the stream is broken, further bytes are dropped."""
        if self._error is None:
            self._buf += data
            self._check_headers()

    def next_pdu(self) -> Pdu | None:
        """The next whole PDU, or None until more bytes arrive; raises PduError on bad input."""
        buf = self._buf
        if len(buf) >= PDU_HEADER_LENGTH:
            (length,) = _U32.unpack_from(buf, 2)
            end = PDU_HEADER_LENGTH + length
            if end <= len(buf):
                view = memoryview(buf)[:end]
                try:
                    pdu = decode_pdu(view)
                except PduError as exc:
                    # Drop the buffer: the traceback may still pin views of the old one.
                    self._error, self._buf, self._scan = exc, bytearray(), 0
                    raise
                finally:
                    view.release()
                del buf[:end]  # O(1) in CPython: bytearray moves its start, not its bytes
                self._scan -= end
                return pdu
        if self._error is not None:
            raise self._error
        return None

    def _check_headers(self) -> None:
        """Check every header now present, before any of its body is awaited or kept."""
        buf = self._buf
        while len(buf) - self._scan >= PDU_HEADER_LENGTH:
            pdu_type, _, length = _HEADER.unpack_from(buf, self._scan)
            try:
                self._check_limit(pdu_type, length)
            except PduError as exc:
                self._error = exc
                del buf[self._scan:]  # nothing from the bad PDU on is kept
                return
            self._scan += PDU_HEADER_LENGTH + length

    def _check_limit(self, pdu_type: int, length: int) -> None:
        check_pdu_header(pdu_type, length)
        if pdu_type == _P_DATA_TF:
            limit = self._max_pdata_length or UNLIMITED_PDATA_CAP  # PS3.8 D.1: 0 = no limit
            if length > limit:
                raise PduError(_INVALID, f"P_DATA_TF of {length} bytes exceeds our maximum "
                                         f"of {limit}")
        elif pdu_type in _ASSOCIATE_TYPES and length > self.max_association_length:
            raise PduError(_INVALID, f"{PduType(pdu_type).name} of {length} bytes exceeds "
                                     f"the limit of {self.max_association_length}")
