"""PS3.8 §9.3 PDU codec: encoding, and strict decoding of PDU bodies.

Cutting a byte stream into PDUs and checking their headers is framer.py's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import TypeVar

from .pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AbortReason,
    AReleaseRP,
    AReleaseRQ,
    AsyncOpsWindow,
    ContextResult,
    ItemType,
    PDataTF,
    Pdu,
    PduType,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationDataValue,
    RawItem,
    RoleSelection,
    SopClassCommonExtended,
    SopClassExtended,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
)

# --- codec: PS3.8 §9.3 PDU and item layouts, PS3.7 Annex D user information sub-items ---

PDU_HEADER_LENGTH = 6  # PDU type, reserved, 4-byte PDU length (PS3.8 §9.3.1)
ITEM_HEADER_LENGTH = 4  # item type, reserved, 2-byte item length (PS3.8 §9.3.2.1)
PDV_HEADER_LENGTH = 6  # 4-byte item length, context ID, message control header (§9.3.5.1)
ASSOCIATE_FIXED_LENGTH = 68  # protocol version .. 32 reserved bytes, before the items (§9.3.2)
FIXED_PDU_LENGTH = 4  # body of RJ, release RQ/RP and abort (§9.3.4, §9.3.6-9.3.8)
AE_TITLE_LENGTH = 16  # space padded (PS3.8 §9.3.2)
MCH_COMMAND = 0x01  # message control header bit 0: command, else data set (PS3.8 E.2)
MCH_LAST = 0x02  # message control header bit 1: last fragment (PS3.8 E.2)
_MAX_ITEM_VALUE = 0xFFFF  # 2-byte item length
_MAX_PDV_DATA = 0xFFFFFFFF - PDV_HEADER_LENGTH  # 4-byte PDU length covers the PDV header

_HEADER = struct.Struct(">BBI")
_ITEM = struct.Struct(">BBH")
_PDV = struct.Struct(">IBB")
_PDATA_ONE_PDV = struct.Struct(">BBIIBB")
_ASSOCIATE_FIXED = struct.Struct(">H2s16s16s32s")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U16_PAIR = struct.Struct(">HH")

_P_DATA_TF = int(PduType.P_DATA_TF)
_ASSOCIATE_TYPES = frozenset({PduType.ASSOCIATE_RQ, PduType.ASSOCIATE_AC})
_KNOWN_ITEM_TYPES = frozenset(ItemType)
_INVALID = AbortReason.INVALID_PDU_PARAMETER_VALUE
_UNEXPECTED = AbortReason.UNEXPECTED_PDU_PARAMETER
_UNRECOGNIZED = AbortReason.UNRECOGNIZED_PDU_PARAMETER


class PduError(Exception):
    """A received PDU breaks PS3.8 §9.3; reason is the A-ABORT diagnostic to send (§9.3.8)."""

    def __init__(self, reason: AbortReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# --- encoding ---


def _ascii(text: str, what: str) -> bytes:
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not ASCII") from None


def _item(item_type: int, value: bytes, reserved: int = 0) -> bytes:
    if len(value) > _MAX_ITEM_VALUE:
        raise ValueError(f"item {item_type:#04x} value of {len(value)} bytes exceeds 65535")
    return _ITEM.pack(item_type, reserved, len(value)) + value


def _lv(value: bytes) -> bytes:
    """A 2-byte length followed by the value, as inside PS3.7 Annex D sub-items."""
    if len(value) > _MAX_ITEM_VALUE:
        raise ValueError(f"field of {len(value)} bytes exceeds 65535")
    return _U16.pack(len(value)) + value


def _ae_title(title: str) -> bytes:
    raw = _ascii(title, "AE title")
    if len(raw) > AE_TITLE_LENGTH:
        raise ValueError(f"AE title {title!r} is longer than {AE_TITLE_LENGTH} characters")
    return raw.ljust(AE_TITLE_LENGTH, b" ")


def _encode_user_identity(identity: UserIdentityRQ | UserIdentityAC) -> bytes:
    if isinstance(identity, UserIdentityAC):  # PS3.7 D.3.3.7.2
        return _item(ItemType.USER_IDENTITY_AC, _lv(identity.server_response))
    head = bytes((identity.identity_type, identity.positive_response_requested))
    value = head + _lv(identity.primary_field) + _lv(identity.secondary_field)
    return _item(ItemType.USER_IDENTITY_RQ, value)  # PS3.7 D.3.3.7.1


def _encode_user_information(info: UserInformation) -> bytes:
    """PS3.8 §9.3.2.3 / PS3.7 D.3.3 user information item.

    Sub-items go in item-type order except that the version name follows the class UID
    (PS3.7 D.3.3.2 pairs them), which is the order DCMTK and pynetdicom send.
    """
    parts: list[bytes] = []
    if info.max_length is not None:
        parts.append(_item(ItemType.MAXIMUM_LENGTH, _U32.pack(info.max_length)))
    if info.implementation_class_uid is not None:
        uid = _ascii(info.implementation_class_uid, "implementation class UID")
        parts.append(_item(ItemType.IMPLEMENTATION_CLASS_UID, uid))
    if info.implementation_version_name is not None:
        name = _ascii(info.implementation_version_name, "implementation version name")
        parts.append(_item(ItemType.IMPLEMENTATION_VERSION_NAME, name))
    if (window := info.async_ops_window) is not None:
        value = _U16_PAIR.pack(window.invoked, window.performed)
        parts.append(_item(ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW, value))
    for role in info.role_selections:
        value = _lv(_ascii(role.sop_class_uid, "SOP class UID"))
        parts.append(_item(ItemType.ROLE_SELECTION, value + bytes((role.scu_role, role.scp_role))))
    for ext in info.sop_class_extended:
        value = _lv(_ascii(ext.sop_class_uid, "SOP class UID")) + ext.info
        parts.append(_item(ItemType.SOP_CLASS_EXTENDED_NEGOTIATION, value))
    for common in info.sop_class_common_extended:  # PS3.7 D.3.3.6, sub-item version 0
        related = b"".join(_lv(_ascii(u, "related SOP class UID"))
                           for u in common.related_general_sop_classes)
        value = (_lv(_ascii(common.sop_class_uid, "SOP class UID"))
                 + _lv(_ascii(common.service_class_uid, "service class UID")) + _lv(related))
        parts.append(_item(ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION, value))
    if info.user_identity is not None:
        parts.append(_encode_user_identity(info.user_identity))
    parts.extend(_item(raw.item_type, raw.data) for raw in info.unknown_items)
    return _item(ItemType.USER_INFORMATION, b"".join(parts))


def _encode_context_rq(ctx: PresentationContextRQ) -> bytes:
    """PS3.8 §9.3.2.2: ID, three reserved bytes, one abstract and 1..n transfer syntaxes."""
    parts = [bytes((ctx.context_id, 0, 0, 0)),
             _item(ItemType.ABSTRACT_SYNTAX, _ascii(ctx.abstract_syntax, "abstract syntax"))]
    parts.extend(_item(ItemType.TRANSFER_SYNTAX, _ascii(ts, "transfer syntax"))
                 for ts in ctx.transfer_syntaxes)
    return _item(ItemType.PRESENTATION_CONTEXT_RQ, b"".join(parts))


def _encode_context_ac(ctx: PresentationContextAC) -> bytes:
    """PS3.8 §9.3.3.2: always one transfer syntax sub-item (empty for a rejected context)."""
    ts = _item(ItemType.TRANSFER_SYNTAX, _ascii(ctx.transfer_syntax, "transfer syntax"))
    return _item(ItemType.PRESENTATION_CONTEXT_AC, bytes((ctx.context_id, 0, ctx.result, 0)) + ts)


def _encode_associate(pdu: AAssociateRQ | AAssociateAC) -> bytes:
    """PS3.8 §9.3.2 / §9.3.3: fixed fields, then application context, contexts, user info."""
    if isinstance(pdu, AAssociateRQ):
        pdu_type = PduType.ASSOCIATE_RQ
        contexts = [_encode_context_rq(c) for c in pdu.presentation_contexts]
    else:
        pdu_type = PduType.ASSOCIATE_AC
        contexts = [_encode_context_ac(c) for c in pdu.presentation_contexts]
    app_context = _ascii(pdu.application_context, "application context name")
    fixed = _ASSOCIATE_FIXED.pack(pdu.protocol_version, b"", _ae_title(pdu.called_ae_title),
                                  _ae_title(pdu.calling_ae_title), b"")
    body = b"".join((fixed, _item(ItemType.APPLICATION_CONTEXT, app_context), *contexts,
                     _encode_user_information(pdu.user_information)))
    return _HEADER.pack(pdu_type, 0, len(body)) + body


def _encode_pdv(pdv: PresentationDataValue) -> bytes:
    """PS3.8 §9.3.5.1 PDV item; message control header per PS3.8 E.2."""
    control = (MCH_COMMAND if pdv.is_command else 0) | (MCH_LAST if pdv.is_last else 0)
    return _PDV.pack(len(pdv.data) + 2, pdv.context_id, control) + pdv.data


def encode_pdata(context_id: int, data: bytes | memoryview, *, is_command: bool,
                 is_last: bool) -> bytes:
    """One P-DATA-TF holding one PDV, in one allocation (PS3.8 §9.3.5, E.2)."""
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > _MAX_PDV_DATA:
        raise ValueError(f"PDV of {size} bytes does not fit a PDU")
    control = (MCH_COMMAND if is_command else 0) | (MCH_LAST if is_last else 0)
    header = _PDATA_ONE_PDV.pack(_P_DATA_TF, 0, size + PDV_HEADER_LENGTH, size + 2, context_id,
                                 control)
    return b"".join((header, data))


def encode_pdu(pdu: Pdu) -> bytes:
    """Encode any PDU to its wire bytes (PS3.8 §9.3)."""
    match pdu:
        case AAssociateRQ() | AAssociateAC():
            return _encode_associate(pdu)
        case PDataTF(pdvs=pdvs):
            body = b"".join(map(_encode_pdv, pdvs))
            return _HEADER.pack(PduType.P_DATA_TF, 0, len(body)) + body
        case AAssociateRJ(result=result, source=source, reason=reason):
            fields = (0, result, source, reason)
            return _HEADER.pack(PduType.ASSOCIATE_RJ, 0, FIXED_PDU_LENGTH) + bytes(fields)
        case AReleaseRQ():
            return _HEADER.pack(PduType.RELEASE_RQ, 0, FIXED_PDU_LENGTH) + bytes(FIXED_PDU_LENGTH)
        case AReleaseRP():
            return _HEADER.pack(PduType.RELEASE_RP, 0, FIXED_PDU_LENGTH) + bytes(FIXED_PDU_LENGTH)
        case AAbort(source=source, reason=reason):
            return _HEADER.pack(PduType.ABORT, 0, FIXED_PDU_LENGTH) + bytes((0, 0, source, reason))
    raise TypeError(f"not a PDU: {pdu!r}")


# --- decoding: every length is checked against what is left in its parent ---

_Buffer = bytes | bytearray | memoryview


def _text(raw: _Buffer, what: str) -> str:
    try:
        return bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        raise PduError(_INVALID, f"{what} is not ASCII: {bytes(raw)[:64]!r}") from None


def _uid(raw: _Buffer, what: str) -> str:
    """A UID as received, without the trailing NUL or space padding some peers add."""
    return _text(raw, what).rstrip("\0 ")


def _items(data: memoryview, start: int, where: str) -> Iterator[tuple[int, memoryview]]:
    """Yield (item type, value) of the PS3.8 §9.3.2 items filling data[start:]."""
    end, offset = len(data), start
    while offset < end:
        if end - offset < ITEM_HEADER_LENGTH:
            raise PduError(_INVALID, f"truncated item header in {where}")
        item_type, _, length = _ITEM.unpack_from(data, offset)
        offset += ITEM_HEADER_LENGTH
        if length > end - offset:
            raise PduError(_INVALID, f"item {item_type:#04x} in {where} declares {length} bytes "
                                     f"but {end - offset} are left")
        yield item_type, data[offset:offset + length]
        offset += length


def _misplaced(item_type: int, where: str) -> PduError:
    """A known item out of order or repeated, or an item type we do not know at all."""
    if item_type in _KNOWN_ITEM_TYPES:
        return PduError(_UNEXPECTED, f"unexpected {ItemType(item_type).name} item in {where}")
    return PduError(_UNRECOGNIZED, f"unrecognized item type {item_type:#04x} in {where}")


def _field(value: memoryview, offset: int, what: str) -> tuple[memoryview, int]:
    """Read a 2-byte-length-prefixed field of a PS3.7 Annex D sub-item."""
    if len(value) - offset < 2:
        raise PduError(_INVALID, f"truncated {what} length")
    (length,) = _U16.unpack_from(value, offset)
    offset += 2
    if length > len(value) - offset:
        raise PduError(_INVALID, f"{what} of {length} bytes overruns its sub-item")
    return value[offset:offset + length], offset + length


def _end(value: memoryview, offset: int, what: str) -> None:
    if offset != len(value):
        raise PduError(_INVALID, f"{len(value) - offset} stray bytes after {what}")


def _fixed(value: memoryview, length: int, what: str) -> memoryview:
    if len(value) != length:
        raise PduError(_INVALID, f"{what} sub-item of {len(value)} bytes, expected {length}")
    return value


def _once(current: object, item_type: int) -> None:
    if current is not None:
        raise PduError(_UNEXPECTED, f"repeated {ItemType(item_type).name} sub-item")


def _decode_role(value: memoryview) -> RoleSelection:
    """PS3.7 D.3.3.4: UID length, SOP class UID, SCU role byte, SCP role byte."""
    uid, offset = _field(value, 0, "role selection SOP class UID")
    _end(value, offset + 2, "role selection")
    return RoleSelection(_uid(uid, "role selection SOP class UID"),
                         scu_role=bool(value[offset]), scp_role=bool(value[offset + 1]))


def _decode_common_extended(value: memoryview) -> SopClassCommonExtended:
    """PS3.7 D.3.3.6: SOP class, service class, then length-prefixed related class UIDs."""
    sop, offset = _field(value, 0, "common extended SOP class UID")
    service, offset = _field(value, offset, "common extended service class UID")
    related_field, offset = _field(value, offset, "related general SOP class identification")
    _end(value, offset, "SOP class common extended negotiation")
    related: list[str] = []
    at = 0
    while at < len(related_field):
        uid, at = _field(related_field, at, "related general SOP class UID")
        related.append(_uid(uid, "related general SOP class UID"))
    return SopClassCommonExtended(_uid(sop, "SOP class UID"), _uid(service, "service class UID"),
                                  tuple(related))


def _decode_user_identity_rq(value: memoryview) -> UserIdentityRQ:
    """PS3.7 D.3.3.7.1: type, positive-response flag, primary and secondary fields."""
    if len(value) < 2:
        raise PduError(_INVALID, "truncated user identity sub-item")
    primary, offset = _field(value, 2, "user identity primary field")
    secondary, offset = _field(value, offset, "user identity secondary field")
    _end(value, offset, "user identity")
    return UserIdentityRQ(value[0], bool(value[1]), primary.tobytes(), secondary.tobytes())


def _decode_user_information(value: memoryview) -> UserInformation:
    """PS3.8 §9.3.2.3 / PS3.7 D.3.3; unknown sub-items are kept raw so they round-trip."""
    max_length: int | None = None
    class_uid: str | None = None
    version_name: str | None = None
    window: AsyncOpsWindow | None = None
    identity: UserIdentityRQ | UserIdentityAC | None = None
    roles: list[RoleSelection] = []
    extended: list[SopClassExtended] = []
    common: list[SopClassCommonExtended] = []
    unknown: list[RawItem] = []
    for item_type, sub in _items(value, 0, "user information"):
        if item_type == ItemType.MAXIMUM_LENGTH:  # PS3.8 D.1
            _once(max_length, item_type)
            (max_length,) = _U32.unpack(_fixed(sub, 4, "maximum length"))
        elif item_type == ItemType.IMPLEMENTATION_CLASS_UID:  # PS3.7 D.3.3.2
            _once(class_uid, item_type)
            class_uid = _uid(sub, "implementation class UID")
        elif item_type == ItemType.IMPLEMENTATION_VERSION_NAME:  # PS3.7 D.3.3.2
            _once(version_name, item_type)
            version_name = _text(sub, "implementation version name").rstrip("\0 ")
        elif item_type == ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW:  # PS3.7 D.3.3.3
            _once(window, item_type)
            window = AsyncOpsWindow(*_U16_PAIR.unpack(_fixed(sub, 4, "asynchronous window")))
        elif item_type == ItemType.ROLE_SELECTION:
            roles.append(_decode_role(sub))
        elif item_type == ItemType.SOP_CLASS_EXTENDED_NEGOTIATION:  # PS3.7 D.3.3.5
            uid, offset = _field(sub, 0, "extended negotiation SOP class UID")
            extended.append(SopClassExtended(_uid(uid, "SOP class UID"), sub[offset:].tobytes()))
        elif item_type == ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION:
            common.append(_decode_common_extended(sub))
        elif item_type == ItemType.USER_IDENTITY_RQ:
            _once(identity, item_type)
            identity = _decode_user_identity_rq(sub)
        elif item_type == ItemType.USER_IDENTITY_AC:  # PS3.7 D.3.3.7.2
            _once(identity, item_type)
            response, offset = _field(sub, 0, "user identity server response")
            _end(sub, offset, "user identity server response")
            identity = UserIdentityAC(response.tobytes())
        else:
            unknown.append(RawItem(item_type, sub.tobytes()))
    return UserInformation(max_length, class_uid, version_name, window, tuple(roles),
                           tuple(extended), tuple(common), identity, tuple(unknown))


def _context_id(value: memoryview, where: str) -> int:
    """PS3.8 §9.3.2.2: presentation context IDs are odd integers 1-255."""
    if len(value) < 4:
        raise PduError(_INVALID, f"truncated {where}")
    context_id = value[0]
    if context_id % 2 == 0:
        raise PduError(_INVALID, f"presentation context ID {context_id} is not odd")
    return context_id


def _decode_context_rq(value: memoryview) -> PresentationContextRQ:
    """PS3.8 §9.3.2.2: one abstract syntax sub-item, then one or more transfer syntaxes."""
    context_id = _context_id(value, "presentation context item")
    where = f"presentation context {context_id}"
    abstract: str | None = None
    transfers: list[str] = []
    for item_type, sub in _items(value, 4, where):
        if item_type == ItemType.ABSTRACT_SYNTAX and abstract is None:
            abstract = _uid(sub, "abstract syntax")
        elif item_type == ItemType.TRANSFER_SYNTAX and abstract is not None:
            transfers.append(_uid(sub, "transfer syntax"))
        else:
            raise _misplaced(item_type, where)
    if abstract is None or not transfers:
        raise PduError(_INVALID, f"{where} needs one abstract and at least one transfer syntax")
    return PresentationContextRQ(context_id, abstract, tuple(transfers))


def _decode_context_ac(value: memoryview) -> PresentationContextAC:
    """PS3.8 §9.3.3.2: result/reason and one transfer syntax, significant only on acceptance."""
    context_id = _context_id(value, "presentation context item")
    where = f"presentation context {context_id}"
    try:
        result = ContextResult(value[2])
    except ValueError:
        raise PduError(_INVALID, f"{where} has unknown result {value[2]}") from None
    transfer: memoryview | None = None
    for item_type, sub in _items(value, 4, where):
        if item_type != ItemType.TRANSFER_SYNTAX or transfer is not None:
            raise _misplaced(item_type, where)
        transfer = sub
    if result is not ContextResult.ACCEPTANCE:
        return PresentationContextAC(context_id, result)  # its transfer syntax is not tested
    transfer_syntax = _uid(transfer, "transfer syntax") if transfer is not None else ""
    if not transfer_syntax:
        raise PduError(_INVALID, f"accepted {where} has no transfer syntax")
    return PresentationContextAC(context_id, result, transfer_syntax)


_Context = TypeVar("_Context", PresentationContextRQ, PresentationContextAC)


def _associate_items(body: memoryview, where: str, context_type: ItemType,
                     decode_context: Callable[[memoryview], _Context],
                     ) -> tuple[str, tuple[_Context, ...], UserInformation]:
    """PS3.8 §9.3.2 / §9.3.3: one application context, contexts, one user information item."""
    app_context: str | None = None
    contexts: list[_Context] = []
    user_info: UserInformation | None = None
    for item_type, value in _items(body, ASSOCIATE_FIXED_LENGTH, where):
        if item_type == ItemType.APPLICATION_CONTEXT and app_context is None:
            app_context = _uid(value, "application context name")
        elif item_type == context_type and app_context is not None and user_info is None:
            contexts.append(decode_context(value))
        elif item_type == ItemType.USER_INFORMATION and contexts and user_info is None:
            user_info = _decode_user_information(value)
        else:
            raise _misplaced(item_type, where)
    if app_context is None or user_info is None:
        missing = "application context" if app_context is None else "user information"
        raise PduError(_INVALID, f"{where} has no {missing} item")
    if len({c.context_id for c in contexts}) != len(contexts):
        raise PduError(_INVALID, f"{where} repeats a presentation context ID")
    return app_context, tuple(contexts), user_info


def _decode_associate(body: memoryview, is_request: bool) -> AAssociateRQ | AAssociateAC:
    """PS3.8 §9.3.2 / §9.3.3 A-ASSOCIATE-RQ or -AC body."""
    # Reserved fields are not tested (PS3.8 §9.3.2); the AC's AE titles are reserved too.
    version, _, called, calling, _ = _ASSOCIATE_FIXED.unpack_from(body)
    # Space padding (PS3.8 §9.3.2); trailing NULs, which some peers pad with, too.
    called_ae = _text(called, "called AE title").rstrip("\0 ").strip(" ")
    calling_ae = _text(calling, "calling AE title").rstrip("\0 ").strip(" ")
    if is_request:
        app, rq_contexts, info = _associate_items(
            body, "A-ASSOCIATE-RQ", ItemType.PRESENTATION_CONTEXT_RQ, _decode_context_rq)
        return AAssociateRQ(called_ae, calling_ae, rq_contexts, info, app, version)
    app, ac_contexts, info = _associate_items(
        body, "A-ASSOCIATE-AC", ItemType.PRESENTATION_CONTEXT_AC, _decode_context_ac)
    return AAssociateAC(called_ae, calling_ae, ac_contexts, info, app, version)


def _decode_pdata(body: memoryview) -> PDataTF:
    """PS3.8 §9.3.5: one or more PDV items, each at least context ID + control header long."""
    pdvs: list[PresentationDataValue] = []
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < PDV_HEADER_LENGTH:
            raise PduError(_INVALID, f"truncated PDV item ({end - offset} bytes left)")
        length, context_id, control = _PDV.unpack_from(body, offset)
        if length < 2:
            raise PduError(_INVALID, f"PDV item length {length} is below 2")
        stop = offset + 4 + length
        if stop > end:
            raise PduError(_INVALID, f"PDV item of {length} bytes overruns the P-DATA-TF")
        data = body[offset + PDV_HEADER_LENGTH:stop].tobytes()
        pdvs.append(PresentationDataValue(context_id, bool(control & MCH_COMMAND),
                                          bool(control & MCH_LAST), data))
        offset = stop
    return PDataTF(tuple(pdvs))


def decode_body(pdu_type: int, body: memoryview) -> Pdu:
    """Decode the body of a PDU whose header `framer.check_pdu_header` accepted (PS3.8 §9.3)."""
    if pdu_type == _P_DATA_TF:
        return _decode_pdata(body)
    if pdu_type in _ASSOCIATE_TYPES:
        return _decode_associate(body, pdu_type == PduType.ASSOCIATE_RQ)
    if pdu_type == PduType.ASSOCIATE_RJ:  # raw ints: unknown source/reason still reach the log
        return AAssociateRJ(result=body[1], source=body[2], reason=body[3])
    if pdu_type == PduType.ABORT:
        return AAbort(source=body[2], reason=body[3])
    return AReleaseRQ() if pdu_type == PduType.RELEASE_RQ else AReleaseRP()
