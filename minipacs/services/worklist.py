"""Basic Worklist Management, Modality Worklist Information Model - FIND SCP (PS3.4 Annex K).

The identifier is decoded like a Query/Retrieve one (services/identifier.py) and its keys
become the same C-FIND conditions (services/matching.py, PS3.4 C.2.2.2); the worklist has a
single level (K.1.1 note 2, K.2.1), so there are no levels, unique keys or relational rules.
Keys inside the Scheduled Procedure Step Sequence (0040,0100) match the step they describe
(sequence matching, C.2.2.2.6). One pending response per Scheduled Procedure Step
(K.6.1.2.1), holding exactly the requested keys (K.2.2.1.2): no Query/Retrieve Level and no
Retrieve AE Title, which K.4.1.1.3 does not put in worklist identifiers; a request that
carries them anyway is answered as if they were absent (documented in docs/conformance.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from pydicom.datadict import dictionary_has_tag
from pydicom.dataset import Dataset

from ..ports import Channel, Condition, FindPage, JsonDataset, MatchKind, Request, WorklistIndex
from ..proto.dimse import CFindRQ
from ..proto.status import Status
from .answers import answer_values, encode_values
from .dispatcher import Outcome
from .find import PAGE_SIZE, read_identifier, refused, stream_answers
from .identifier import (
    TAG_QUERY_RETRIEVE_LEVEL,
    TAG_RETRIEVE_AE_TITLE,
    TAG_SPECIFIC_CHARACTER_SET,
    IdentifierError,
    ReturnKey,
    _charset_terms,
    _encodings,
    _item_keys,
    _only_item,
    _vr_of,
    decode_identifier,
)
from .matching import RangeForm, combine_date_time, key_condition

__all__ = [
    "IGNORED_KEYS",
    "WorklistQuery",
    "WorklistService",
    "parse_worklist_identifier",
]

log = logging.getLogger("minipacs.worklist")

TAG_SPS_SEQUENCE: Final = 0x00400100  # Scheduled Procedure Step Sequence
TAG_SPS_START_DATE: Final = 0x00400002
TAG_SPS_START_TIME: Final = 0x00400003
# Query/Retrieve keys that have no place in a worklist identifier (K.4.1.1.3): tolerated in
# a request, neither matched nor answered.
IGNORED_KEYS: Final = frozenset({TAG_QUERY_RETRIEVE_LEVEL, TAG_RETRIEVE_AE_TITLE})
_COMMAND_GROUP: Final = 0x0000
_META_GROUP: Final = 0x0002

Matchable = Callable[[int | None], frozenset[int]]


@dataclass(frozen=True, slots=True)
class WorklistQuery:
    """A checked worklist identifier: conditions for the index, keys to answer, charset."""

    conditions: tuple[Condition, ...]
    return_keys: tuple[ReturnKey, ...]
    unsupported: tuple[int, ...]  # keys not matched or not returned: pending status 0xFF01
    charset: tuple[str, ...]


@dataclass(slots=True)
class _Parse:
    encodings: list[str]
    matchable: Matchable
    conditions: list[Condition] = field(default_factory=list)
    return_keys: list[ReturnKey] = field(default_factory=list)
    unsupported: list[int] = field(default_factory=list)


def parse_worklist_identifier(ds: Dataset, matchable: Matchable) -> WorklistQuery:
    """Check a Modality Worklist identifier and build its conditions (PS3.4 K.2.2, C.2.2.2).

    Raises IdentifierError: 0xA900 for a value its VR does not allow, a sequence key with
    more than one item, or no key at all; 0xC000 for text that cannot be decoded.
    """
    charset = _charset_terms(ds)
    encodings = _encodings(charset)
    parse = _Parse(encodings, matchable)
    top = matchable(None)
    for tag in sorted(map(int, ds.keys())):
        if tag == TAG_SPECIFIC_CHARACTER_SET or tag & 0xFFFF == 0 or tag in IGNORED_KEYS:
            continue  # group lengths are recomputed; the charset is chosen per answer
        if tag >> 16 in (_COMMAND_GROUP, _META_GROUP) or tag >> 16 & 1 or \
                not dictionary_has_tag(tag):
            parse.unsupported.append(tag)  # command, meta, private or unknown: omitted
            continue
        elem = ds.get_item(tag)
        assert elem is not None
        vr = _vr_of(elem, tag)
        if vr == "SQ":
            _sequence(parse, ds, tag, tag in top)
            continue
        condition = key_condition(tag, vr, elem, encodings, {})
        parse.return_keys.append(ReturnKey(tag, vr))
        if condition is not None:
            if tag in top:
                parse.conditions.append(condition)
            else:  # return-only: the answers say so with 0xFF01 (K.4.1.2.3)
                parse.unsupported.append(tag)
    if not parse.return_keys:
        raise IdentifierError(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                              "identifier holds no worklist key")
    return WorklistQuery(tuple(parse.conditions), tuple(parse.return_keys),
                         tuple(parse.unsupported), charset)


def _sequence(parse: _Parse, ds: Dataset, tag: int, matched: bool) -> None:
    """PS3.4 C.2.2.2.6: the one item's keys match inside it; no item or no value: universal."""
    item = _only_item(ds, tag)
    if item is None:
        parse.return_keys.append(ReturnKey(tag, "SQ"))  # the whole sequence (K.2.2.1.2 note 4)
        return
    if not matched:
        keys, conditions = _item_keys(item, parse.encodings)
        if conditions:
            parse.unsupported.append(tag)
        parse.return_keys.append(ReturnKey(tag, "SQ", tuple(keys) or None))
        return
    inside = parse.matchable(tag)
    keys: list[ReturnKey] = []
    conditions: dict[int, Condition] = {}
    forms: dict[int, RangeForm] = {}
    for item_tag in sorted(map(int, item.keys())):
        if item_tag & 0xFFFF == 0 or item_tag == TAG_SPECIFIC_CHARACTER_SET:
            continue
        elem = item.get_item(item_tag)
        assert elem is not None
        vr = _vr_of(elem, item_tag)
        if vr == "SQ":  # nested sequences are returned, never matched
            nested = _only_item(item, item_tag)
            sub_keys, sub_conditions = _item_keys(nested, parse.encodings) if nested else ([], [])
            keys.append(ReturnKey(item_tag, "SQ", tuple(sub_keys) or None))
            if sub_conditions:
                parse.unsupported.append(item_tag)
            continue
        condition = key_condition(item_tag, vr, elem, parse.encodings, forms)
        keys.append(ReturnKey(item_tag, vr))
        if condition is None:
            continue
        if item_tag in inside:
            conditions[item_tag] = condition
        else:
            parse.unsupported.append(item_tag)
    # SPS Start Date and Time ranges match as one period, whatever their forms: the
    # worklist has no extended negotiation for it (K.5.1), so it always applies.
    combine_date_time(conditions, forms, TAG_SPS_START_DATE, TAG_SPS_START_TIME,
                      same_form=False)
    if conditions:
        parse.conditions.append(Condition(tag, "SQ", MatchKind.SEQUENCE,
                                          items=tuple(conditions.values())))
    parse.return_keys.append(ReturnKey(tag, "SQ", tuple(keys) or None))


class WorklistService:
    """The C-FIND handler of the Modality Worklist Information Model - FIND SOP class."""

    def __init__(self, index: WorklistIndex, *, page_size: int = PAGE_SIZE) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.index = index
        self.page_size = page_size

    async def __call__(self, channel: Channel, request: Request) -> Outcome:
        message = request.message
        assert isinstance(message, CFindRQ)
        try:
            data = await read_identifier(request)
        except IdentifierError as exc:
            return refused(message, exc)
        transfer_syntax = request.context.transfer_syntax
        try:
            parsed = parse_worklist_identifier(decode_identifier(data, transfer_syntax),
                                               self.index.matchable)
        except IdentifierError as exc:
            return refused(message, exc)

        def encode(answer: JsonDataset) -> tuple[bytes, bool]:
            values, degraded = answer_values(answer, parsed.return_keys)
            encoded, lost = encode_values(values, parsed.charset, transfer_syntax)
            return encoded, degraded or lost

        def pages(after: object | None) -> Awaitable[FindPage]:
            return self.index.find(parsed.conditions, after=after, limit=self.page_size)

        started = time.perf_counter()
        outcome, sent = await stream_answers(channel, request, pages, encode,
                                             warning=bool(parsed.unsupported))
        log.debug("worklist C-FIND from %s: %d step(s), 0x%04X in %.1f ms",
                  channel.info.calling_ae, sent, outcome.message.status,  # type: ignore[union-attr]
                  (time.perf_counter() - started) * 1000)
        return outcome

