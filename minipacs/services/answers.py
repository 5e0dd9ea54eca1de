"""C-FIND answers: one DICOM JSON answer of the index → one encoded response identifier.

PS3.4 C.4.1.1.3.2 (what a response identifier holds), PS3.18 F.2 (DICOM JSON), PS3.5 §7.1
(data element encoding) and §6.1.2.5 (character sets).

String-valued elements, nearly all of any answer, are written here: element header with
``struct`` (tag, VR, length as PS3.5 §7.1.2/§7.1.3 lay them out), text through pydicom's
character-set encoders. Everything else (sequences, binary VRs, values too long for a short
length field) goes through pydicom's ``write_data_element``. Measured on a 12-key study
answer: pydicom's ``write_dataset`` with DataElements costs ~750 µs, this ~40 µs, and a
C-FIND streams hundreds of answers (DESIGN principle 8 allows such a codec on a hot path).
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from pydicom import config as pydicom_config
from pydicom.charset import convert_encodings, custom_encoders, encode_string, python_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.valuerep import DSfloat, PersonName

from ..ports import JsonDataset
from ..proto.sop import dataset_encoding
from .dataset_codec import deflate
from .identifier import (
    TAG_INSTANCE_AVAILABILITY,
    TAG_QUERY_RETRIEVE_LEVEL,
    TAG_RETRIEVE_AE_TITLE,
    TAG_SPECIFIC_CHARACTER_SET,
    ParsedQuery,
    ReturnKey,
)
from .matching import CHARSET_VRS, ISO2022_DEFAULT, describe_tag

__all__ = [
    "UTF8",
    "AnswerEncoder",
    "AnswerValues",
    "IdentifierWriter",
    "answer_charset",
    "answer_values",
    "encode_answer",
    "encode_dataset",
    "encode_values",
]

log = logging.getLogger("minipacs.find")

UTF8: Final = "ISO_IR 192"
INSTANCE_ONLINE: Final = "ONLINE"  # PS3.4 C.4.1.1.3.2 Instance Availability: all on disk
_ASCII_TERMS: Final = frozenset({"", "ISO_IR 6", ISO2022_DEFAULT})
# PS3.18 F.2.3: VRs whose JSON values are strings or numbers written as text.
STRING_VRS: Final = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN",
                               "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
# PS3.5 §7.1.2: explicit VRs with a reserved field and a 32-bit length.
_LONG_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN",
                              "UR", "UT", "UV"})
_MAX_SHORT_LENGTH: Final = 0xFFFE  # the largest even length a 16-bit field holds


class IdentifierWriter:
    """Element-by-element encoder of one identifier in one transfer syntax (PS3.5 §7.1)."""

    def __init__(self, transfer_syntax: str, charset: Sequence[str]) -> None:
        self.implicit, little, self.deflated = _encoding(transfer_syntax)
        self.fp = DicomBytesIO()
        self.fp.is_implicit_VR = self.implicit
        self.fp.is_little_endian = little
        self.order = "<" if little else ">"
        self.terms: str | list[str] = list(charset) if charset else "iso8859"
        self.encodings = convert_encodings(list(charset) if charset else None)

    def text(self, tag: int, vr: str, values: Sequence[str]) -> None:
        """A string-valued element; values already Unicode."""
        raw = b"\\".join(self._encode(vr, value) for value in values)
        if len(raw) % 2:
            raw += b"\0" if vr == "UI" else b" "  # PS3.5 §6.2: UI pads with NUL
        if not self.implicit and vr not in _LONG_VRS and len(raw) > _MAX_SHORT_LENGTH:
            self.element(DataElement(tag, vr, list(values)))  # pydicom writes it as UN
            return
        self.fp.write(self._header(tag, vr, len(raw)) + raw)

    def element(self, element: DataElement) -> None:
        write_data_element(self.fp, element, self.terms)

    def getvalue(self) -> bytes:
        data = self.fp.getvalue()
        return deflate(data) if self.deflated else data  # PS3.5 A.5

    def _header(self, tag: int, vr: str, length: int) -> bytes:
        group, elem = tag >> 16, tag & 0xFFFF
        if self.implicit:
            return struct.pack(f"{self.order}HHI", group, elem, length)
        if vr in _LONG_VRS:
            return struct.pack(f"{self.order}HH2sHI", group, elem, vr.encode(), 0, length)
        return struct.pack(f"{self.order}HH2sH", group, elem, vr.encode(), length)

    def _encode(self, vr: str, value: str) -> bytes:
        if value.isascii():
            return value.encode("ascii")
        if vr == "PN":
            return PersonName(value).encode(self.encodings)
        return encode_string(value, self.encodings)


@functools.lru_cache(maxsize=16)
def _encoding(transfer_syntax: str) -> tuple[bool, bool, bool]:
    return dataset_encoding(transfer_syntax)


def encode_answer(answer: JsonDataset, parsed: ParsedQuery, ae_title: str,
                  transfer_syntax: str) -> tuple[bytes, bool]:
    """One pending response's identifier, and whether an element had to be left empty.

    PS3.4 C.4.1.1.3.2: every requested key (its value, or zero length when the entity has
    none), the Query/Retrieve Level, our Retrieve AE Title and the unique keys; text in the
    query's character set when it fits, else UTF-8, with (0008,0005) saying which.
    """
    values, degraded = answer_values(answer, parsed.return_keys)
    values[TAG_QUERY_RETRIEVE_LEVEL] = ("CS", [parsed.query.level.value])
    values[TAG_RETRIEVE_AE_TITLE] = ("AE", [ae_title])
    if TAG_INSTANCE_AVAILABILITY in values and not values[TAG_INSTANCE_AVAILABILITY][1]:
        values[TAG_INSTANCE_AVAILABILITY] = ("CS", [INSTANCE_ONLINE])
    data, unwritten = encode_values(values, parsed.charset, transfer_syntax)
    return data, degraded or unwritten


class AnswerEncoder:
    """`encode_answer` for every answer of one query, with what does not change computed once.

    Built per query: the element order, the Query/Retrieve Level and Retrieve AE Title
    elements (the same in every answer) and each key's element header prefix. An answer whose
    values are all text in the default repertoire (nearly all of them) is written straight
    from its JSON; anything else — a sequence, a binary VR, a character set to choose, a
    value too long for a short length field, Instance Availability — takes `encode_answer`,
    so the bytes are the same either way.
    """

    def __init__(self, parsed: ParsedQuery, ae_title: str, transfer_syntax: str) -> None:
        self._general = (parsed, ae_title, transfer_syntax)
        implicit, little, self._deflated = _encoding(transfer_syntax)
        self._implicit = implicit
        self._order = "<" if little else ">"
        constants = {TAG_QUERY_RETRIEVE_LEVEL: ("CS", [parsed.query.level.value]),
                     TAG_RETRIEVE_AE_TITLE: ("AE", [ae_title])}
        # (tag, JSON key, VR when empty) per key, or (tag, encoded element) for a constant.
        plan: list[tuple[int, str, str] | tuple[int, bytes]] = []
        keys = {key.tag: key for key in parsed.return_keys}
        for tag in sorted(keys.keys() | constants.keys()):
            if tag in constants:
                vr, value = constants[tag]
                plan.append((tag, _ascii_element_bytes(self, tag, vr, value)))
            else:
                plan.append((tag, f"{tag:08X}", keys[tag].vr))
        self._plan = plan
        self._simple = ae_title.isascii() and all(
            key.vr != "SQ" and key.items is None and key.tag != TAG_INSTANCE_AVAILABILITY
            for key in parsed.return_keys)

    def encode(self, answer: JsonDataset) -> tuple[bytes, bool]:
        """The identifier of one answer and whether an element had to be left empty."""
        if self._simple:
            out = []
            for step in self._plan:
                if len(step) == 2:
                    out.append(step[1])  # type: ignore[arg-type]
                    continue
                tag, json_key, empty_vr = step  # type: ignore[misc]
                element = answer.get(json_key)
                values = element.get("Value") if element else None
                if not values:
                    out.append(_ascii_element_bytes(self, tag, empty_vr, ()))
                    continue
                vr = element.get("vr", empty_vr)  # type: ignore[union-attr]
                if vr not in STRING_VRS:
                    break
                texts = [_string(vr, value) for value in values]
                if not all(text.isascii() for text in texts):
                    break
                encoded = _ascii_element_bytes(self, tag, vr, texts)
                if encoded is None:
                    break
                out.append(encoded)
            else:
                data = b"".join(out)
                return (deflate(data) if self._deflated else data), False
        return encode_answer(answer, *self._general)


def _ascii_element_bytes(encoder: AnswerEncoder, tag: int, vr: str,
                         values: Sequence[str]) -> bytes:
    """One text element of ASCII values, as `IdentifierWriter.text` writes it (PS3.5 §7.1);
    None when its length does not fit a short length field (the general path then)."""
    raw = "\\".join(values).encode("ascii")
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "  # PS3.5 §6.2: UI pads with NUL
    order, group, elem = encoder._order, tag >> 16, tag & 0xFFFF
    if encoder._implicit:
        return struct.pack(f"{order}HHI", group, elem, len(raw)) + raw
    if vr in _LONG_VRS:
        return struct.pack(f"{order}HH2sHI", group, elem, vr.encode(), 0, len(raw)) + raw
    if len(raw) > _MAX_SHORT_LENGTH:
        return None  # type: ignore[return-value]
    return struct.pack(f"{order}HH2sH", group, elem, vr.encode(), len(raw)) + raw


AnswerValues = dict[int, tuple[str, Any]]  # tag -> (VR, strings or a pydicom element)


def answer_values(answer: JsonDataset, return_keys: Sequence[ReturnKey]
                  ) -> tuple[AnswerValues, bool]:
    """Each requested key's value in `answer` (None: zero length), and whether one was lost."""
    values: AnswerValues = {}
    degraded = False
    for key in return_keys:
        vr, value, ok = _value(key, answer.get(f"{key.tag:08X}"))
        values[key.tag] = (vr, value)
        degraded |= not ok
    return values, degraded


def encode_values(values: AnswerValues, query_charset: Sequence[str],
                  transfer_syntax: str) -> tuple[bytes, bool]:
    """An identifier of exactly `values`, with the Specific Character Set it needs.

    Returns the bytes and whether an element had to be sent empty.
    """
    values = dict(values)
    degraded = False
    charset = answer_charset(_texts(values.values()), query_charset)
    if charset:
        values[TAG_SPECIFIC_CHARACTER_SET] = ("CS", list(charset))
    writer = IdentifierWriter(transfer_syntax, charset)
    for tag in sorted(values):
        vr, value = values[tag]
        try:
            if isinstance(value, DataElement):
                writer.element(value)
            else:
                writer.text(tag, vr, value or ())
        except Exception:  # one unwritable value must not cost the peer the whole answer
            log.warning("C-FIND answer: %s cannot be encoded, sent empty", describe_tag(tag))
            writer.text(tag, vr, ()) if vr != "SQ" else writer.element(
                DataElement(tag, "SQ", []))
            degraded = True
    return writer.getvalue(), degraded


def encode_dataset(ds: Dataset, transfer_syntax: str) -> bytes:
    """A pydicom data set in a transfer syntax, deflated when it says so (PS3.5 §10, A.5)."""
    charset = ds.get(TAG_SPECIFIC_CHARACTER_SET)  # the element (by keyword: only its value)
    terms = [] if charset is None else list(charset.value) if charset.VM > 1 else [charset.value]
    writer = IdentifierWriter(transfer_syntax, terms)
    for element in ds:
        writer.element(element)
    return writer.getvalue()


def _value(key: ReturnKey, element: Mapping[str, Any] | None
           ) -> tuple[str, list[str] | DataElement | None, bool]:
    """(VR, strings or a pydicom element, converted fine) from a JSON element (PS3.18 F.2)."""
    if not element or not element.get("Value"):
        return key.vr, (DataElement(key.tag, "SQ", []) if key.vr == "SQ" else None), True
    vr, values = str(element.get("vr", key.vr)), element["Value"]
    try:
        if vr in STRING_VRS:
            return vr, [_string(vr, value) for value in values], True
        if vr == "SQ":
            items = [_item(item, key.items) for item in values if isinstance(item, dict)]
            return vr, DataElement(key.tag, vr, items), True
        element_ = DataElement.from_json(Dataset, f"{key.tag:08X}", vr, values, "Value")
        return vr, element_, True
    except Exception:
        log.warning("C-FIND answer: %s cannot be converted, sent empty", describe_tag(key.tag))
        return key.vr, (DataElement(key.tag, "SQ", []) if key.vr == "SQ" else None), False


def _string(vr: str, value: Any) -> str:
    if vr == "PN" and isinstance(value, dict):  # {"Alphabetic", "Ideographic", "Phonetic"}
        groups = [value.get(p, "") or "" for p in ("Alphabetic", "Ideographic", "Phonetic")]
        return "=".join(groups).rstrip("=")
    if vr == "DS" and isinstance(value, float):
        return str(DSfloat(value, auto_format=True))
    if vr == "IS" and isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _item(item: Mapping[str, Any], keys: Sequence[ReturnKey] | None) -> Dataset:
    """A sequence item: the requested item keys only (PS3.4 C.2.2.2.6), or all of it."""
    if keys is None:
        return Dataset.from_json(dict(item))
    ds = Dataset()
    for key in keys:
        vr, value, _ = _value(key, item.get(f"{key.tag:08X}"))
        if isinstance(value, DataElement):
            ds.add(value)
        else:
            ds.add(DataElement(key.tag, vr, value if value else None,
                               validation_mode=pydicom_config.IGNORE))
    return ds


def _texts(values: Iterable[tuple[str, Any]]) -> Iterable[str]:
    """Every value that the Specific Character Set applies to (PS3.5 §6.1.2.3)."""
    for vr, value in values:
        if isinstance(value, DataElement):
            if value.VR == "SQ":
                for item in value.value or ():
                    yield from _dataset_texts(item)
        elif vr in CHARSET_VRS and value:
            yield from value


def _dataset_texts(ds: Dataset) -> Iterable[str]:
    for element in ds:
        if element.VR == "SQ":
            for item in element.value or ():
                yield from _dataset_texts(item)
        elif element.VR in CHARSET_VRS and element.value is not None:
            values = element.value if element.VM > 1 else [element.value]
            yield from (str(value) for value in values)


def answer_charset(texts: Iterable[str], query_charset: Sequence[str]) -> tuple[str, ...]:
    """The Specific Character Set an answer is encoded in (PS3.4 C.2.2.2, PS3.5 §6.1.2.5).

    () when the default repertoire suffices; the query's own when every text fits it;
    otherwise ISO_IR 192 (UTF-8), which holds anything.
    """
    values = [text for text in texts if not text.isascii()]
    if not values:
        return ()
    if query_charset and all(_fits(text, query_charset) for text in values):
        return tuple(query_charset)
    return (UTF8,)


def _fits(text: str, terms: Sequence[str]) -> bool:
    """Whether `text` can be written with the character set `terms` (ISO 2022 extensions)."""
    encoders = []
    for term in terms:
        if term in _ASCII_TERMS:
            encoders.append(_codec_encoder("ascii"))
            continue
        codec = python_encoding.get(term)
        if codec is None:
            return False  # a term we do not know: we cannot promise the peer reads it
        encoders.append(custom_encoders.get(codec, _codec_encoder(codec)))
    if len(encoders) == 1:
        return _encodes(encoders[0], text)
    # Code extensions switch repertoires inside a value: each character needs one of them.
    return all(any(_encodes(encoder, char) for encoder in encoders) for char in set(text))


def _codec_encoder(codec: str) -> Any:
    def encode(value: str, errors: str = "strict") -> bytes:
        return value.encode(codec, errors)
    return encode


def _encodes(encoder: Any, text: str) -> bool:
    try:
        encoder(text, errors="strict")
    except (UnicodeError, ValueError, LookupError):
        return False
    return True
