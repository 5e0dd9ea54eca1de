"""Valid seeds for the fuzzers: PDUs, command sets and C-FIND identifiers, built once.

Everything is generated with our own encoders and pydicom, deterministically; the mutators
(mutate.py) start from these so that most cases get past the first length check.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Final

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from minipacs.proto.command_codec import encode_command
from minipacs.proto.dimse import (
    DATA_SET_PRESENT,
    TAG_AFFECTED_SOP_CLASS_UID,
    TAG_AFFECTED_SOP_INSTANCE_UID,
    TAG_COMMAND_DATA_SET_TYPE,
    TAG_COMMAND_FIELD,
    TAG_COMMAND_GROUP_LENGTH,
    TAG_MESSAGE_ID,
    TAG_PRIORITY,
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CommandField,
    CStoreRQ,
    CStoreRSP,
    DimseMessage,
    NActionRQ,
    NCreateRQ,
    NEventReportRQ,
    NGetRQ,
    NSetRQ,
    Priority,
)
from minipacs.proto.negotiation import (
    AcceptorPolicy,
    build_associate_rq,
    default_supported,
    negotiate_as_acceptor,
)
from minipacs.proto.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    AsyncOpsWindow,
    PDataTF,
    PresentationDataValue,
    RawItem,
    RoleSelection,
    SopClassCommonExtended,
    SopClassExtended,
    UserIdentityRQ,
    UserInformation,
)
from minipacs.proto.pdu_codec import encode_pdata, encode_pdu
from minipacs.proto.sop import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    MPPS,
    PATIENT_ROOT_QR_FIND,
    STORAGE_COMMITMENT_PUSH,
    STUDY_ROOT_QR_FIND,
    STUDY_ROOT_QR_GET,
    STUDY_ROOT_QR_MOVE,
    VERIFICATION,
)
from minipacs.services.dataset_codec import deflate
from tests.support import make_ct

CT: Final = "1.2.840.10008.5.1.4.1.1.2"
CALLED_AE: Final = "ANY-SCP"
CALLING_AE: Final = "FUZZER"
NATIVE: Final = (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN,
                 DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
# The contexts every fuzzing association proposes, IDs 1, 3, 5, ... in this order.
CONTEXTS: Final = (
    (VERIFICATION, NATIVE),
    (CT, NATIVE),
    (STUDY_ROOT_QR_FIND, NATIVE),
    (PATIENT_ROOT_QR_FIND, NATIVE),
    (STUDY_ROOT_QR_MOVE, NATIVE),
    (STUDY_ROOT_QR_GET, NATIVE),
    (MPPS, NATIVE),
    (STORAGE_COMMITMENT_PUSH, NATIVE),
)
CONTEXT_IDS: Final = {abstract: 2 * n + 1 for n, (abstract, _) in enumerate(CONTEXTS)}
UID_ROOT: Final = "1.2.826.0.1.3680043.9.7433"  # a test root; nothing real lives under it


def policy(max_pdu_length: int = 16384) -> AcceptorPolicy:
    """The acceptor policy the in-process targets negotiate with (the server's defaults)."""
    return AcceptorPolicy(ae_title=CALLED_AE, supported=default_supported(),
                          max_pdu_length=max_pdu_length)


def associate_rq(calling: str = CALLING_AE, *, rich: bool = False) -> AAssociateRQ:
    """An A-ASSOCIATE-RQ proposing CONTEXTS; `rich` adds every user-information sub-item."""
    rq = build_associate_rq(calling, CALLED_AE, CONTEXTS, max_pdu_length=16384,
                            async_ops=AsyncOpsWindow(4, 4) if rich else None,
                            roles=[RoleSelection(CT, True, True)] if rich else (),
                            extended=[SopClassExtended(STUDY_ROOT_QR_FIND, b"\x01\x01")]
                            if rich else ())
    if not rich:
        return rq
    info = rq.user_information
    return AAssociateRQ(rq.called_ae_title, rq.calling_ae_title, rq.presentation_contexts,
                    UserInformation(
                        info.max_length, info.implementation_class_uid,
                        info.implementation_version_name, info.async_ops_window,
                        info.role_selections, info.sop_class_extended,
                        (SopClassCommonExtended(CT, "1.2.840.10008.4.2", ("1.2.3", "1.2.4")),),
                        UserIdentityRQ(2, True, b"user", b"secret"),
                        (RawItem(0x5F, b"vendor"),)),
                    rq.application_context, rq.protocol_version)


def associate_ac() -> AAssociateAC:
    answer = negotiate_as_acceptor(associate_rq(rich=True), policy())
    assert isinstance(answer, AAssociateAC)
    return answer


def identifier(level: str, model: str = STUDY_ROOT_QR_FIND, **keys: object) -> Dataset:
    """A C-FIND identifier with the usual return keys of `level` and the given values."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.SpecificCharacterSet = "ISO_IR 100"
    if model == PATIENT_ROOT_QR_FIND or level == "PATIENT":
        ds.PatientID = keys.pop("PatientID", "")
    ds.PatientName = keys.pop("PatientName", "")
    if level in ("STUDY", "SERIES", "IMAGE"):
        ds.StudyInstanceUID = keys.pop("StudyInstanceUID", "")
        ds.StudyDate = keys.pop("StudyDate", "")
        ds.StudyTime = ""
        ds.ModalitiesInStudy = ""
        ds.AccessionNumber = keys.pop("AccessionNumber", "")
    if level in ("SERIES", "IMAGE"):
        ds.SeriesInstanceUID = keys.pop("SeriesInstanceUID", "")
        ds.Modality = ""
    if level == "IMAGE":
        ds.SOPInstanceUID = ""
        ds.InstanceNumber = None
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def encode(ds: Dataset, transfer_syntax: str) -> bytes:
    """A data set's bytes in a native transfer syntax, no File Meta (PS3.5 A.1, A.2, A.5)."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    write_dataset(fp, ds)
    data = fp.getvalue()
    return deflate(data) if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN else data


@functools.cache
def identifiers() -> tuple[tuple[bytes, str], ...]:
    """(identifier bytes, transfer syntax) seeds: every level, ranges, lists, a sequence."""
    sequence = Dataset()
    sequence.ReferencedSOPClassUID = CT
    sequence.ReferencedSOPInstanceUID = ""
    seeds = [
        identifier("PATIENT", PATIENT_ROOT_QR_FIND, PatientName="Doe*"),
        identifier("STUDY", StudyDate="20240101-20241231", PatientName="A?C*"),
        identifier("STUDY", StudyInstanceUID=f"{UID_ROOT}.1\\{UID_ROOT}.2"),
        identifier("SERIES", StudyInstanceUID=f"{UID_ROOT}.1", Modality="CT"),
        identifier("IMAGE", StudyInstanceUID=f"{UID_ROOT}.1",
                   SeriesInstanceUID=f"{UID_ROOT}.2", ReferencedStudySequence=[sequence]),
        identifier("STUDY", StudyDate="-20240101", StudyTime="1200-", PatientBirthDate=""),
    ]
    seeds.append(worklist_identifier())
    return tuple((encode(ds, ts), ts) for ds in seeds for ts in NATIVE)


def worklist_identifier() -> Dataset:
    """A Modality Worklist query: a Scheduled Procedure Step item with a date range."""
    step = Dataset()
    step.ScheduledStationAETitle = "CT1"
    step.ScheduledProcedureStepStartDate = "20240101-20240131"
    step.Modality = "CT"
    code = Dataset()
    code.CodeValue = ""
    step.ScheduledProtocolCodeSequence = [code]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Doe^*"
    ds.PatientID = ""
    ds.AccessionNumber = ""
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def commands() -> tuple[DimseMessage, ...]:
    """One command of each kind the server answers, plus responses and a C-CANCEL."""
    uid = f"{UID_ROOT}.3.1"
    return (
        CEchoRQ(message_id=1, affected_sop_class_uid=VERIFICATION),
        CStoreRQ(message_id=2, affected_sop_class_uid=CT, affected_sop_instance_uid=uid,
                 move_originator_ae_title="MOVER", move_originator_message_id=7),
        CFindRQ(message_id=3, affected_sop_class_uid=STUDY_ROOT_QR_FIND),
        CMoveRQ(message_id=4, affected_sop_class_uid=STUDY_ROOT_QR_MOVE,
                move_destination="DEST"),
        CGetRQ(message_id=5, affected_sop_class_uid=STUDY_ROOT_QR_GET),
        CCancelRQ(message_id_being_responded_to=3),
        NCreateRQ(message_id=6, affected_sop_class_uid=MPPS, affected_sop_instance_uid=uid),
        NSetRQ(message_id=7, requested_sop_class_uid=MPPS, requested_sop_instance_uid=uid),
        NGetRQ(message_id=8, requested_sop_class_uid=MPPS, requested_sop_instance_uid=uid,
               attribute_identifier_list=(0x00100010, 0x00400252)),
        NActionRQ(message_id=9, requested_sop_class_uid=STORAGE_COMMITMENT_PUSH,
                  requested_sop_instance_uid="1.2.840.10008.1.20.1.1", action_type_id=1,
                  has_dataset=True),
        NEventReportRQ(message_id=10, affected_sop_class_uid=STORAGE_COMMITMENT_PUSH,
                       affected_sop_instance_uid="1.2.840.10008.1.20.1.1", event_type_id=1),
        CEchoRSP(message_id_being_responded_to=1),
        CStoreRSP(message_id_being_responded_to=2, affected_sop_class_uid=CT,
                  affected_sop_instance_uid=uid, status=0xA700, error_comment="full",
                  offending_element=(0x00080018,)),
        CFindRSP(message_id_being_responded_to=3, status=0xFF00, has_dataset=True),
        CGetRSP(message_id_being_responded_to=5, status=0xFF00,
                number_of_remaining_suboperations=3, number_of_completed_suboperations=1,
                number_of_failed_suboperations=0, number_of_warning_suboperations=0),
    )


@dataclass(frozen=True, slots=True)
class Seeds:
    """Whole PDUs (wire bytes) to mutate, by kind, and the command sets of the P-DATA ones."""

    associate: tuple[bytes, ...]  # A-ASSOCIATE-RQ and -AC: the richest structure
    control: tuple[bytes, ...]  # A-ASSOCIATE-RJ, A-RELEASE-RQ/RP, A-ABORT
    pdata: tuple[bytes, ...]  # commands and data-set fragments
    command_sets: tuple[bytes, ...]

    @property
    def pdus(self) -> tuple[bytes, ...]:
        return self.associate + self.control + self.pdata


def data_set_pdus(data: bytes, context_id: int, size: int = 4096) -> list[bytes]:
    """A data set as P-DATA-TFs of at most `size` bytes of data each."""
    cuts = range(0, max(len(data), 1), size)
    return [encode_pdata(context_id, data[start:start + size], is_command=False,
                         is_last=start + size >= len(data)) for start in cuts]


@functools.cache
def seeds() -> Seeds:
    """Every seed, built once per process."""
    command_sets = tuple(encode_command(message) for message in commands())
    identifier_bytes, _ = identifiers()[1]
    pdata = [
        encode_pdu(PDataTF((PresentationDataValue(1, True, True, command_sets[0]),
                            PresentationDataValue(3, True, False, command_sets[1][:20])))),
        *data_set_pdus(identifier_bytes, CONTEXT_IDS[STUDY_ROOT_QR_FIND]),
    ]
    for message, raw in zip(commands(), command_sets, strict=True):
        context = CONTEXT_IDS.get(getattr(message, "affected_sop_class_uid", None)
                                  or getattr(message, "requested_sop_class_uid", None)
                                  or VERIFICATION, 1)
        pdata.append(encode_pdata(context, raw, is_command=True, is_last=True))
    return Seeds(
        associate=(encode_pdu(associate_rq()), encode_pdu(associate_rq(rich=True)),
                   encode_pdu(associate_ac())),
        control=(encode_pdu(AAssociateRJ(1, 1, 3)), encode_pdu(AReleaseRQ()),
                 encode_pdu(AReleaseRP()), encode_pdu(AAbort(2, 6))),
        pdata=tuple(pdata),
        command_sets=command_sets,
    )


def ct(uid_seed: int, *, study: int, patient: int, pixel_bytes: int = 2048) -> Dataset:
    """A small CT instance of study `study` of patient `patient` (UIDs under UID_ROOT)."""
    ds = make_ct(pixel_bytes=pixel_bytes, index=uid_seed % 1000)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPInstanceUID = f"{UID_ROOT}.3.{uid_seed}"
    ds.StudyInstanceUID = f"{UID_ROOT}.1.{study}"
    ds.SeriesInstanceUID = f"{UID_ROOT}.2.{study}.{uid_seed % 3}"
    ds.PatientName = f"Fuzz^Patient{patient}"
    ds.PatientID = f"FUZZ-{patient}"
    return ds


def _element(tag: int, value: bytes) -> bytes:
    """One command element, Implicit VR Little Endian, padded to even length (PS3.7 §6.3.1)."""
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def store_command(message_id: int, instance_uid: bytes, sop_class: str = CT) -> bytes:
    """A C-STORE-RQ command set carrying any Affected SOP Instance UID bytes (PS3.7 §9.3.1.1):
    our encoder (rightly) refuses what a hostile peer sends, so this one is built by hand."""
    body = b"".join([
        _element(TAG_AFFECTED_SOP_CLASS_UID, sop_class.encode()),
        _element(TAG_COMMAND_FIELD, struct.pack("<H", CommandField.C_STORE_RQ)),
        _element(TAG_MESSAGE_ID, struct.pack("<H", message_id)),
        _element(TAG_PRIORITY, struct.pack("<H", Priority.MEDIUM)),
        _element(TAG_COMMAND_DATA_SET_TYPE, struct.pack("<H", DATA_SET_PRESENT)),
        _element(TAG_AFFECTED_SOP_INSTANCE_UID, instance_uid),
    ])
    return _element(TAG_COMMAND_GROUP_LENGTH, struct.pack("<I", len(body))) + body
