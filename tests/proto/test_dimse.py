"""PS3.7 DIMSE command-set codec: wire vectors, round trips, pydicom/pynetdicom cross-checks."""

from __future__ import annotations

import dataclasses
import random
import struct
from io import BytesIO
from typing import Any

import pytest
from pydicom.datadict import dictionary_keyword, dictionary_VR
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from minipacs.proto import dimse
from minipacs.proto.command_codec import decode_command, encode_command
from minipacs.proto.dimse import (
    COMMAND_ELEMENTS,
    DATA_SET_ABSENT,
    MESSAGE_TYPES,
    TAG_AFFECTED_SOP_CLASS_UID,
    TAG_COMMAND_DATA_SET_TYPE,
    TAG_COMMAND_FIELD,
    TAG_COMMAND_GROUP_LENGTH,
    TAG_MESSAGE_ID,
    TAG_MESSAGE_ID_BEING_RESPONDED_TO,
    TAG_PRIORITY,
    TAG_STATUS,
    CCancelRQ,
    CEchoRQ,
    CFindRSP,
    CommandField,
    CStoreRQ,
    CStoreRSP,
    DimseError,
    DimseMessage,
    NGetRQ,
    Priority,
    dataset_follows,
    is_request,
    is_response,
)
from minipacs.proto.status import Status

VERIFICATION = "1.2.840.10008.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def move_rq(destination: str) -> DimseMessage:
    return dimse.CMoveRQ(message_id=1, affected_sop_class_uid="1.2", move_destination=destination)


def element(tag: int, value: bytes) -> bytes:
    """One implicit VR LE element: tag group, tag element, 32-bit length, value."""
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def us(tag: int, value: int) -> bytes:
    return element(tag, struct.pack("<H", value))


def with_group_length(body: bytes) -> bytes:
    return element(TAG_COMMAND_GROUP_LENGTH, struct.pack("<I", len(body))) + body


# --- hand-checked wire vectors (PS3.5 §7.1.3 implicit VR LE, §6.2 padding) -----------------

C_ECHO_RQ_BYTES = bytes.fromhex(
    # (0000,0000) Command Group Length, length 4, value 0x38 = 56 bytes follow
    "0000 0000 04000000 38000000"
    # (0000,0002) Affected SOP Class UID, length 18: "1.2.840.10008.1.1" + NUL pad
    "0000 0200 12000000 312e322e3834302e31303030382e312e3100"
    # (0000,0100) Command Field, length 2, 0x0030 C-ECHO-RQ
    "0000 0001 02000000 3000"
    # (0000,0110) Message ID, length 2, value 1
    "0000 1001 02000000 0100"
    # (0000,0800) Command Data Set Type, length 2, 0x0101 = no data set
    "0000 0008 02000000 0101"
)

C_STORE_RSP_BYTES = bytes.fromhex(
    # (0000,0000) Command Group Length, length 4, value 0x72 = 114 bytes follow
    "0000 0000 04000000 72000000"
    # (0000,0002) Affected SOP Class UID, length 26: "1.2.840.10008.5.1.4.1.1.7" + NUL
    "0000 0200 1a000000 312e322e3834302e31303030382e352e312e342e312e312e3700"
    # (0000,0100) Command Field, length 2, 0x8001 C-STORE-RSP
    "0000 0001 02000000 0180"
    # (0000,0120) Message ID Being Responded To, length 2, value 5
    "0000 2001 02000000 0500"
    # (0000,0800) Command Data Set Type, length 2, 0x0101 = no data set
    "0000 0008 02000000 0101"
    # (0000,0900) Status, length 2, 0xA700 Out of resources
    "0000 0009 02000000 00a7"
    # (0000,0901) Offending Element, length 4, AT (0010,0020): group then element
    "0000 0109 04000000 1000 2000"
    # (0000,0902) Error Comment, length 6: "FULL!" + space pad
    "0000 0209 06000000 46554c4c2120"
    # (0000,1000) Affected SOP Instance UID, length 6: "1.2.3" + NUL pad
    "0000 0010 06000000 312e322e3300"
)

C_ECHO_RQ = CEchoRQ(message_id=1, affected_sop_class_uid=VERIFICATION)
C_STORE_RSP = CStoreRSP(
    message_id_being_responded_to=5,
    status=Status.OUT_OF_RESOURCES,
    affected_sop_class_uid=SECONDARY_CAPTURE,
    affected_sop_instance_uid="1.2.3",
    offending_element=(0x0010_0020,),
    error_comment="FULL!",
)


@pytest.mark.parametrize(
    ("msg", "wire"), [(C_ECHO_RQ, C_ECHO_RQ_BYTES), (C_STORE_RSP, C_STORE_RSP_BYTES)]
)
def test_wire_vectors(msg: DimseMessage, wire: bytes) -> None:
    assert encode_command(msg) == wire
    assert decode_command(wire) == msg


# --- every message type ---------------------------------------------------------------------

SAMPLE_VALUES: dict[str, Any] = {
    "message_id": 0xFFFF,
    "message_id_being_responded_to": 42,
    "affected_sop_class_uid": SECONDARY_CAPTURE,
    "requested_sop_class_uid": "1.2.840.10008.5.1.1.16",
    "affected_sop_instance_uid": "1.2.826.0.1.3680043.8.498.1",
    "requested_sop_instance_uid": "1.2.826.0.1.3680043.8.498.22",
    "move_destination": "STORESCP",
    "priority": Priority.HIGH,
    "status": Status.PENDING_WARNING,
    "offending_element": (0x0010_0010, 0x7FE0_0010),
    "error_comment": "an odd comment",
    "error_id": 7,
    "event_type_id": 2,
    "attribute_identifier_list": (0x0008_0016, 0x0008_0018, 0x2100_0020),
    "action_type_id": 1,
    "number_of_remaining_suboperations": 3,
    "number_of_completed_suboperations": 2,
    "number_of_failed_suboperations": 1,
    "number_of_warning_suboperations": 0,
    "move_originator_ae_title": "MOVER",
    "move_originator_message_id": 99,
}


def full_message(cls: type[DimseMessage]) -> DimseMessage:
    """Every field set, and has_dataset flipped from its default."""
    values = {
        f.name: (not f.default) if f.name == "has_dataset" else SAMPLE_VALUES[f.name]
        for f in dataclasses.fields(cls)
    }
    return cls(**values)


def minimal_message(cls: type[DimseMessage]) -> DimseMessage:
    """Only the fields without a default."""
    required = {
        f.name: SAMPLE_VALUES[f.name]
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING
    }
    return cls(**required)


ALL_TYPES = list(MESSAGE_TYPES.values())


def test_every_command_field_has_a_message() -> None:
    assert set(MESSAGE_TYPES) == set(CommandField)
    assert len(ALL_TYPES) == 23
    for field, cls in MESSAGE_TYPES.items():
        assert cls.command_field is field


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("build", [full_message, minimal_message])
def test_round_trip(cls: type[DimseMessage], build: Any) -> None:
    msg = build(cls)
    assert decode_command(encode_command(msg)) == msg


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_encoding_layout(cls: type[DimseMessage]) -> None:
    """Group length first and exact, tags ascending, every value of even length."""
    data = encode_command(full_message(cls))
    tags, offset = [], 0
    while offset < len(data):
        group, elem, length = struct.unpack_from("<HHI", data, offset)
        assert group == 0
        assert length % 2 == 0
        tags.append(elem)
        offset += 8 + length
    assert offset == len(data)
    assert tags[0] == TAG_COMMAND_GROUP_LENGTH
    assert tags == sorted(tags)
    assert struct.unpack_from("<I", data, 8)[0] == len(data) - 12


def test_optional_none_fields_are_omitted() -> None:
    data = encode_command(CStoreRSP(message_id_being_responded_to=1))
    present = set(pydicom_read(data).keys())
    # (0000,0000) group length, (0000,0100), (0000,0120), (0000,0800), (0000,0900)
    assert present == {0x0, 0x100, 0x120, 0x800, 0x900}


def test_request_response_helpers() -> None:
    for cls in ALL_TYPES:
        msg = minimal_message(cls)
        expect_response = cls.__name__.endswith("RSP")
        assert is_response(msg) is expect_response
        assert is_request(msg) is not expect_response
    assert is_request(CCancelRQ(message_id_being_responded_to=1))
    assert CommandField.N_EVENT_REPORT_RSP.label == "N-EVENT-REPORT-RSP"


def test_dataset_defaults_follow_the_service() -> None:
    store = CStoreRQ(message_id=1, affected_sop_class_uid="1", affected_sop_instance_uid="2")
    assert dataset_follows(store)
    assert not dataset_follows(C_ECHO_RQ)
    assert not dataset_follows(CFindRSP(message_id_being_responded_to=1))
    assert dataset_follows(CFindRSP(message_id_being_responded_to=1, has_dataset=True))


def test_messages_are_frozen_and_slotted() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        C_ECHO_RQ.message_id = 2  # type: ignore[misc]
    for cls in ALL_TYPES:
        assert not hasattr(minimal_message(cls), "__dict__")


# --- the element table against the standard's data dictionary -----------------------------


def test_command_elements_match_pydicom_dictionary() -> None:
    assert len(COMMAND_ELEMENTS) == 24
    for tag, (vr, keyword, _) in COMMAND_ELEMENTS.items():
        assert dictionary_keyword(tag) == keyword
        assert dictionary_VR(tag) == vr
    named = {v for k, v in vars(dimse).items() if k.startswith("TAG_")}
    assert named == set(COMMAND_ELEMENTS)


# --- cross-checks with pydicom -------------------------------------------------------------


def pydicom_read(data: bytes) -> Dataset:
    return read_dataset(BytesIO(data), is_implicit_VR=True, is_little_endian=True)


def pydicom_write(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return fp.getvalue()


def expected_elements(msg: DimseMessage) -> dict[str, Any]:
    """Keyword -> value that the command set must hold for ``msg``."""
    out: dict[str, Any] = {"CommandField": int(msg.command_field)}
    for _, keyword, attr in COMMAND_ELEMENTS.values():
        if attr in ("", "command_field") or getattr(msg, attr, None) is None:
            continue
        value = getattr(msg, attr)
        if attr == "has_dataset":
            value = 0x0000 if value else DATA_SET_ABSENT
        out[keyword] = value
    return out


def pydicom_value(ds: Dataset, keyword: str) -> Any:
    value = ds[keyword].value
    if ds[keyword].VR == "AT":
        return tuple(int(t) for t in (value if ds[keyword].VM > 1 else [value]))
    return value


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_pydicom_reads_what_we_write(cls: type[DimseMessage]) -> None:
    msg = full_message(cls)
    data = encode_command(msg)
    ds = pydicom_read(data)
    assert ds.CommandGroupLength == len(data) - 12
    expected = expected_elements(msg)
    assert {e.keyword for e in ds} == {*expected, "CommandGroupLength"}
    for keyword, value in expected.items():
        assert pydicom_value(ds, keyword) == value, keyword


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_we_read_what_pydicom_writes(cls: type[DimseMessage]) -> None:
    msg = full_message(cls)
    ds = Dataset()
    for keyword, value in expected_elements(msg).items():
        setattr(ds, keyword, list(value) if isinstance(value, tuple) else value)
    body = pydicom_write(ds)
    ds.CommandGroupLength = len(body)
    data = pydicom_write(ds)
    assert decode_command(data) == msg
    assert data == encode_command(msg)  # same padding and order as pydicom


# --- cross-checks with pynetdicom (a third-party peer, tests only) ------------------------


def test_pynetdicom_c_store_rq_decodes() -> None:
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode

    primitive = C_STORE()
    primitive.MessageID = 3
    primitive.AffectedSOPClassUID = SECONDARY_CAPTURE
    primitive.AffectedSOPInstanceUID = "1.2.3.45"
    primitive.Priority = 2
    primitive.MoveOriginatorApplicationEntityTitle = "ORIG"
    primitive.MoveOriginatorMessageID = 9
    primitive.DataSet = BytesIO(b"\x00\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    data = encode(message.command_set, True, True)

    assert decode_command(data) == CStoreRQ(
        message_id=3,
        affected_sop_class_uid=SECONDARY_CAPTURE,
        affected_sop_instance_uid="1.2.3.45",
        priority=Priority.LOW,
        has_dataset=True,  # pynetdicom writes 0x0001, which also means "present"
        move_originator_ae_title="ORIG",
        move_originator_message_id=9,
    )


def test_pynetdicom_c_move_rsp_decodes() -> None:
    from pynetdicom.dimse_messages import C_MOVE_RSP
    from pynetdicom.dimse_primitives import C_MOVE
    from pynetdicom.dsutils import encode

    primitive = C_MOVE()
    primitive.MessageIDBeingRespondedTo = 3
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    primitive.Status = 0xFF00
    primitive.NumberOfRemainingSuboperations = 4
    primitive.NumberOfCompletedSuboperations = 1
    primitive.NumberOfFailedSuboperations = 0
    primitive.NumberOfWarningSuboperations = 2
    message = C_MOVE_RSP()
    message.primitive_to_message(primitive)
    decoded = decode_command(encode(message.command_set, True, True))

    assert decoded == dimse.CMoveRSP(
        message_id_being_responded_to=3,
        status=Status.PENDING,
        affected_sop_class_uid="1.2.840.10008.5.1.4.1.2.2.2",
        number_of_remaining_suboperations=4,
        number_of_completed_suboperations=1,
        number_of_failed_suboperations=0,
        number_of_warning_suboperations=2,
    )


def test_pynetdicom_reads_our_c_store_rq() -> None:
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dsutils import decode

    data = encode_command(
        CStoreRQ(
            message_id=11,
            affected_sop_class_uid=SECONDARY_CAPTURE,
            affected_sop_instance_uid="1.2.3.4.5",
            priority=Priority.HIGH,
        )
    )
    message = C_STORE_RQ()
    message.command_set = decode(BytesIO(data), True, True)
    primitive = message.message_to_primitive()
    assert primitive.MessageID == 11
    assert primitive.AffectedSOPClassUID == SECONDARY_CAPTURE
    assert primitive.AffectedSOPInstanceUID == "1.2.3.4.5"
    assert primitive.Priority == Priority.HIGH


# --- decoding: tolerated deviations -------------------------------------------------------


def echo_body(data_set_type: int = DATA_SET_ABSENT) -> list[bytes]:
    return [
        element(TAG_AFFECTED_SOP_CLASS_UID, b"1.2.840.10008.1.1\x00"),
        us(TAG_COMMAND_FIELD, CommandField.C_ECHO_RQ),
        us(TAG_MESSAGE_ID, 1),
        us(TAG_COMMAND_DATA_SET_TYPE, data_set_type),
    ]


def test_missing_group_length_is_tolerated() -> None:
    assert decode_command(b"".join(echo_body())) == C_ECHO_RQ


def test_unknown_group_0000_elements_are_ignored() -> None:
    parts = echo_body()
    parts.insert(3, us(0x0000_0850, 12))  # retired Number of Matches
    parts.append(element(0x0000_5010, b"ID"))  # retired Message Set ID
    assert decode_command(with_group_length(b"".join(parts))) == C_ECHO_RQ


def test_string_padding_is_stripped() -> None:
    parts = echo_body()
    parts[0] = element(TAG_AFFECTED_SOP_CLASS_UID, b"1.2.840.10008.1.1 \x00\x00 ")
    assert decode_command(b"".join(parts)).affected_sop_class_uid == VERIFICATION
    # AE leading and trailing spaces are not significant (PS3.5 Table 6.2-1)
    move = encode_command(move_rq(" DEST  "))
    assert decode_command(move).move_destination == "DEST"  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [0x0000, 0x0001, 0x0102, 0xFEFE])
def test_any_data_set_type_but_0101_means_present(value: int) -> None:
    assert decode_command(b"".join(echo_body(value))).has_dataset is True


def test_zero_length_optional_element_counts_as_absent() -> None:
    data = encode_command(CStoreRSP(message_id_being_responded_to=1))
    data = with_group_length(data[12:] + element(0x0000_0902, b""))
    assert decode_command(data).error_comment is None  # type: ignore[union-attr]


def test_buffer_types() -> None:
    assert decode_command(memoryview(C_ECHO_RQ_BYTES)) == C_ECHO_RQ
    assert decode_command(bytearray(C_STORE_RSP_BYTES)) == C_STORE_RSP


def test_known_status_decodes_to_member_unknown_stays_int() -> None:
    known = decode_command(C_STORE_RSP_BYTES)
    assert known.status is Status.OUT_OF_RESOURCES  # type: ignore[union-attr]
    raw = C_STORE_RSP_BYTES.replace(bytes.fromhex("00a7"), bytes.fromhex("42a7"))
    assert decode_command(raw).status == 0xA742  # type: ignore[union-attr]


# --- decoding: rejected input -----------------------------------------------------------


def replace_element(tag: int, new: bytes | None) -> bytes:
    """C-ECHO-RQ body with ``tag`` replaced by ``new`` (None drops it)."""
    keep = {
        TAG_AFFECTED_SOP_CLASS_UID: echo_body()[0],
        TAG_COMMAND_FIELD: echo_body()[1],
        TAG_MESSAGE_ID: echo_body()[2],
        TAG_COMMAND_DATA_SET_TYPE: echo_body()[3],
    }
    keep[tag] = new or b""
    return with_group_length(b"".join(keep[t] for t in sorted(keep)))


BAD_INPUTS = {
    "truncated header": C_ECHO_RQ_BYTES[:-13],
    "truncated value": C_ECHO_RQ_BYTES[:-1],
    "length past buffer": C_ECHO_RQ_BYTES[:-10] + struct.pack("<HHI", 0, 0x800, 200) + b"\1\1",
    "undefined length": C_ECHO_RQ_BYTES + struct.pack("<HHI", 0, 0x902, 0xFFFFFFFF),
    "outside group 0000": C_ECHO_RQ_BYTES + element(0x0008_0016, b"1.2\x00"),
    "missing command field": replace_element(TAG_COMMAND_FIELD, None),
    "missing message id": replace_element(TAG_MESSAGE_ID, None),
    "missing data set type": replace_element(TAG_COMMAND_DATA_SET_TYPE, None),
    "missing required uid": replace_element(TAG_AFFECTED_SOP_CLASS_UID, None),
    # Found by scripts/fuzz: padding only is no value (it decoded as "", which re-encodes
    # as a zero-length element, i.e. absent: the round trip failed).
    "required uid of padding only": replace_element(
        TAG_AFFECTED_SOP_CLASS_UID, element(TAG_AFFECTED_SOP_CLASS_UID, b"\x00\x00")),
    "unknown command field": replace_element(TAG_COMMAND_FIELD, us(TAG_COMMAND_FIELD, 0x0031)),
    "US of 4 bytes": replace_element(TAG_MESSAGE_ID, element(TAG_MESSAGE_ID, b"\1\0\0\0")),
    "US of 1 byte": replace_element(TAG_COMMAND_FIELD, element(TAG_COMMAND_FIELD, b"\x30")),
    "UL group length of 2 bytes": element(TAG_COMMAND_GROUP_LENGTH, b"\0\0")
    + C_ECHO_RQ_BYTES[12:],
    "duplicate element": C_ECHO_RQ_BYTES + us(TAG_MESSAGE_ID, 2),
    "response without id responded to": with_group_length(
        us(TAG_COMMAND_FIELD, CommandField.C_ECHO_RSP)
        + us(TAG_COMMAND_DATA_SET_TYPE, DATA_SET_ABSENT)
        + us(TAG_STATUS, 0)
    ),
    "response without status": with_group_length(
        us(TAG_COMMAND_FIELD, CommandField.C_ECHO_RSP)
        + us(TAG_MESSAGE_ID_BEING_RESPONDED_TO, 1)
        + us(TAG_COMMAND_DATA_SET_TYPE, DATA_SET_ABSENT)
    ),
    "invalid priority": with_group_length(
        element(TAG_AFFECTED_SOP_CLASS_UID, b"1.2\x00")
        + us(TAG_COMMAND_FIELD, CommandField.C_FIND_RQ)
        + us(TAG_MESSAGE_ID, 1)
        + us(TAG_PRIORITY, 3)
        + us(TAG_COMMAND_DATA_SET_TYPE, 0)
    ),
    "AT of 6 bytes": C_STORE_RSP_BYTES.replace(
        bytes.fromhex("0000 0109 04000000 1000 2000"),
        bytes.fromhex("0000 0109 06000000 1000 2000 0000"),
    ),
}


@pytest.mark.parametrize("data", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_malformed_commands_raise_dimse_error(data: bytes) -> None:
    with pytest.raises(DimseError) as info:
        decode_command(data)
    assert str(info.value)
    assert info.value.__cause__ is None  # a deliberate check, not the catch-all


def test_fuzzed_commands_only_raise_dimse_error() -> None:
    """Random mutations of valid commands decode or raise a deliberate DimseError."""
    rng = random.Random(20240607)
    seeds = [encode_command(full_message(cls)) for cls in ALL_TYPES]
    seeds += [C_ECHO_RQ_BYTES, C_STORE_RSP_BYTES]
    outcomes = {"decoded": 0, "rejected": 0}
    for _ in range(4000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            if not data:
                break
            pos = rng.randrange(len(data))
            action = rng.randrange(5)
            if action == 0:
                data[pos] = rng.randrange(256)
            elif action == 1:
                del data[pos:]
            elif action == 2:
                data[pos:pos] = rng.randbytes(rng.randint(1, 8))
            elif action == 3:
                del data[pos : pos + rng.randint(1, 8)]
            elif pos + 8 <= len(data):  # tamper with a length field position
                struct.pack_into("<I", data, pos + 4 - pos % 2, rng.getrandbits(32))
        try:
            decode_command(bytes(data))
            outcomes["decoded"] += 1
        except DimseError as exc:
            assert exc.__cause__ is None, f"unexpected {exc.__cause__!r} for {bytes(data).hex()}"
            outcomes["rejected"] += 1
    assert outcomes["decoded"] > 0
    assert outcomes["rejected"] > 0


# --- encoding: rejected values ----------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        CEchoRQ(message_id=0x10000, affected_sop_class_uid=VERIFICATION),
        CEchoRQ(message_id=-1, affected_sop_class_uid=VERIFICATION),
        CEchoRQ(message_id=1, affected_sop_class_uid="1." * 40),
        CEchoRQ(message_id=1, affected_sop_class_uid="1.2.é"),
        move_rq("A_TITLE_LONGER_THAN_16"),
        NGetRQ(
            message_id=1,
            requested_sop_class_uid="1.2",
            requested_sop_instance_uid="1.3",
            attribute_identifier_list=(0x1_0000_0000,),
        ),
    ],
)
def test_unencodable_values_raise_value_error(msg: DimseMessage) -> None:
    with pytest.raises(ValueError):
        encode_command(msg)
