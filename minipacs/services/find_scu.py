"""Query/Retrieve C-FIND as SCU (PS3.4 C.4.1, PS3.7 §9.1.2): keys → identifier → answers.

Keys are given as in DCMTK's findscu: ``Keyword=value`` or ``gggg,eeee=value``, and a key
without ``=`` is a return key sent with zero length (universal matching, C.2.2.2.3). Text
that is not plain ASCII is sent in ISO_IR 192 (UTF-8), with (0008,0005) saying so.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from ..ports import Channel, QueryLevel
from ..proto.dimse import CFindRQ, CFindRSP
from ..proto.sop import PATIENT_ROOT_QR_FIND, STUDY_ROOT_QR_FIND
from ..proto.status import StatusCategory, category
from .answers import STRING_VRS, UTF8, IdentifierWriter
from .dataset_codec import InflateError, plain_bytes, read_plain
from .identifier import (
    MODEL_LEVELS,
    TAG_QUERY_RETRIEVE_LEVEL,
    TAG_SPECIFIC_CHARACTER_SET,
    UNIQUE_KEYS,
    Model,
)

__all__ = [
    "DEFAULT_KEYS",
    "MAX_ANSWER_BYTES",
    "ROOTS",
    "AnswerError",
    "FindKey",
    "FindReply",
    "build_identifier",
    "check_level",
    "decode_answer",
    "default_keys",
    "find",
    "parse_key",
    "unique_key",
]

# --root: the information model's FIND SOP class (PS3.4 C.6.1.2, C.6.2.2).
ROOTS: Final = {"patient": PATIENT_ROOT_QR_FIND, "study": STUDY_ROOT_QR_FIND}
MODEL_OF_ROOT: Final = {"patient": Model.PATIENT_ROOT, "study": Model.STUDY_ROOT}
# Return keys when none are given: the level's required keys (PS3.4 Tables C.6-1 to C.6-4).
DEFAULT_KEYS: Final[dict[QueryLevel, tuple[str, ...]]] = {
    QueryLevel.PATIENT: ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    QueryLevel.STUDY: ("StudyDate", "StudyTime", "AccessionNumber", "StudyID",
                       "StudyInstanceUID", "ModalitiesInStudy", "StudyDescription"),
    QueryLevel.SERIES: ("Modality", "SeriesNumber", "SeriesDescription", "SeriesInstanceUID"),
    QueryLevel.IMAGE: ("InstanceNumber", "SOPClassUID", "SOPInstanceUID"),
}
MAX_ANSWER_BYTES: Final = 16 << 20  # an inflated answer identifier, at most
_TAG = re.compile(r"\(?([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)?")


@dataclass(frozen=True, slots=True)
class FindKey:
    """One -k key: its tag and value; None is a return key sent with zero length."""

    tag: int
    value: str | None = None

    @property
    def keyword(self) -> str:
        keyword = keyword_for_tag(self.tag) if dictionary_has_tag(self.tag) else ""
        return keyword or f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"


@dataclass(frozen=True, slots=True)
class FindReply:
    """One C-FIND response: status, Error Comment, and the answer of a pending one."""

    status: int
    error_comment: str | None = None
    identifier: Dataset | None = None

    @property
    def pending(self) -> bool:
        return category(self.status) is StatusCategory.PENDING


def parse_key(spec: str) -> FindKey:
    """'PatientName=SMITH*', '0010,0010=SMITH*', '(0010,0010)' or 'StudyDate'."""
    name, has_value, value = spec.partition("=")
    name = name.strip()
    match = _TAG.fullmatch(name)
    if match is not None:
        tag = int(match[1] + match[2], 16)
    else:
        found = tag_for_keyword(name)
        if found is None:
            raise ValueError(f"unknown attribute {name!r} (a keyword or gggg,eeee)")
        tag = int(found)
    if tag >> 16 in (0x0000, 0x0002) or tag == TAG_QUERY_RETRIEVE_LEVEL:
        raise ValueError(f"{name} cannot be a key (use --level for the level)")
    if tag == TAG_SPECIFIC_CHARACTER_SET:
        raise ValueError("SpecificCharacterSet is chosen from the values (UTF-8 when needed)")
    if not dictionary_has_tag(tag):
        raise ValueError(f"unknown attribute {name!r}: only public dictionary tags")
    return FindKey(tag, value if has_value else None)


def default_keys(level: QueryLevel | str) -> list[FindKey]:
    """The return keys asked for when the user gives none."""
    return [parse_key(keyword) for keyword in DEFAULT_KEYS[QueryLevel(level)]]


def check_level(root: str, level: QueryLevel | str) -> None:
    """Study Root has no PATIENT level (PS3.4 C.6.2.1): a usage error, not a query."""
    if root not in MODEL_OF_ROOT:
        raise ValueError(f"unknown information model {root!r}: one of {', '.join(ROOTS)}")
    if QueryLevel(level) not in MODEL_LEVELS[MODEL_OF_ROOT[root]]:
        raise ValueError(f"the {root} root model has no {QueryLevel(level).value} level")


def build_identifier(level: QueryLevel, keys: Sequence[FindKey], transfer_syntax: str) -> bytes:
    """The C-FIND request identifier (PS3.4 C.4.1.1.3.1), encoded in `transfer_syntax`."""
    values: dict[int, FindKey] = {key.tag: key for key in keys}
    texts = [key.value for key in values.values() if key.value]
    charset = [] if all(text.isascii() for text in texts) else [UTF8]
    writer = IdentifierWriter(transfer_syntax, charset)
    elements: dict[int, tuple[str, Sequence[str]] | DataElement] = {
        TAG_QUERY_RETRIEVE_LEVEL: ("CS", [level.value])}
    if charset:
        elements[TAG_SPECIFIC_CHARACTER_SET] = ("CS", charset)
    for tag, key in values.items():
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr in STRING_VRS:
            # Matching values keep their backslashes: a list is several values (C.2.2.2.2).
            elements[tag] = (vr, key.value.split("\\") if key.value else [])
        elif vr == "SQ":
            if key.value:
                raise ValueError(f"{key.keyword} is a sequence: give it without a value")
            elements[tag] = DataElement(tag, "SQ", [])
        elif key.value:
            raise ValueError(f"{key.keyword} ({vr}) can only be a return key")
        else:
            elements[tag] = DataElement(tag, vr, None)
    for tag in sorted(elements):
        element = elements[tag]
        if isinstance(element, DataElement):
            writer.element(element)
        else:
            writer.text(tag, *element)
    return writer.getvalue()


class AnswerError(ValueError):
    """A response identifier that cannot be read whole; str() says why, in one line."""


def decode_answer(data: bytes, transfer_syntax: str) -> Dataset:
    """A response identifier as a pydicom data set (values decoded on access).

    A Deflated one past MAX_ANSWER_BYTES inflated, or corrupt, raises AnswerError: an
    answer is never cut short silently.
    """
    try:
        plain = plain_bytes(data, transfer_syntax, limit=MAX_ANSWER_BYTES)
    except InflateError as exc:
        raise AnswerError(f"a Deflated answer {exc}") from None
    return read_plain(plain, transfer_syntax)


async def find(channel: Channel, sop_class: str, level: QueryLevel,
               keys: Sequence[FindKey]) -> AsyncIterator[FindReply]:
    """Send one C-FIND-RQ and yield its responses, the final one last (PS3.7 §9.1.2)."""
    context = next((c for c in sorted(channel.info.negotiated.contexts.values(),
                                      key=lambda c: c.context_id)
                    if c.abstract_syntax == sop_class and c.scu_role), None)
    if context is None:
        raise LookupError("the peer did not accept the Query/Retrieve FIND SOP class")
    identifier = build_identifier(level, keys, context.transfer_syntax)
    message = CFindRQ(message_id=channel.next_message_id(), affected_sop_class_uid=sop_class)
    async for reply in channel.request(context.context_id, message, identifier):
        rsp = reply.message
        assert isinstance(rsp, CFindRSP)
        answer = None
        if reply.dataset and category(rsp.status) is StatusCategory.PENDING:
            answer = decode_answer(reply.dataset, context.transfer_syntax)
        yield FindReply(rsp.status, rsp.error_comment, answer)


def unique_key(level: QueryLevel) -> FindKey:
    """The unique key of a level (PS3.4 C.6.1.1), asked for so every answer identifies."""
    return FindKey(UNIQUE_KEYS[level])
