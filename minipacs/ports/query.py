"""Query and retrieve ports: C-FIND conditions and pages, C-MOVE/C-GET instance pages."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from .index import JsonDataset

# --- Query (C-FIND) ---------------------------------------------------------------------
# What the C-FIND service asks of the index: conditions already parsed from the identifier
# (PS3.4 C.2.2.2), answers as DICOM JSON per matching entity, pages by keyset.


class QueryLevel(enum.StrEnum):
    """Query/Retrieve levels (PS3.4 C.6.1.1, C.6.2.1), top down."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


class MatchKind(enum.StrEnum):
    """The matching types of PS3.4 C.2.2.2 (universal matching is no condition at all)."""

    SINGLE = "single"  # C.2.2.2.1 single value
    # C.2.2.2.2 list of UIDs, and on other VRs any of several values: each value is matched
    # as SINGLE would, or as WILDCARD when it holds * or ? (on the VRs that allow them).
    LIST = "list"
    WILDCARD = "wildcard"  # C.2.2.2.4: one value holding * and/or ?
    RANGE = "range"  # C.2.2.2.5: values (low, high), "" for an open end
    EMPTY = "empty"  # C.2.2.2.7: the value "" matches entities with no value
    SEQUENCE = "sequence"  # C.2.2.2.6: `items` are the conditions inside the one item


@dataclass(frozen=True, slots=True)
class Condition:
    """One matching key of an identifier. Text values are Unicode (already decoded).

    For a combined date-time range (C.2.2.2.5.4, negotiated) the condition is on the DA tag
    with values ("YYYYMMDDHHMMSS.FFFFFF" low, high), each end possibly "", and `combined_with`
    names the TM tag whose column joins it.
    """

    tag: int
    vr: str
    kind: MatchKind
    values: tuple[str, ...] = ()
    items: tuple[Condition, ...] = ()
    combined_with: int | None = None


@dataclass(frozen=True, slots=True)
class FindQuery:
    """A C-FIND identifier as the index sees it.

    `conditions` may name keys of the query level and of the levels above it (and, when
    relational queries were negotiated, below it: an entity matches when one of its
    descendants does, PS3.4 C.4.1.3.2).
    """

    level: QueryLevel
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class FindPage:
    """One page of answers: one JSON data set per matching entity, in a stable order.

    Each data set holds the entity's attributes and those of the levels above it, plus the
    computed keys of PS3.4 C.6.1.1 (NumberOf...RelatedInstances, ModalitiesInStudy,
    SOPClassesInStudy) of its level. `after` is the keyset cursor of the next page, None at
    the end.
    """

    answers: tuple[JsonDataset, ...]
    after: object | None


class QueryIndex(Protocol):
    """The read side of the index, for C-FIND (and later C-MOVE/C-GET)."""

    def matchable(self, level: QueryLevel) -> frozenset[int]:
        """Tags the index can match on for a query at `level` (the level and above)."""
        ...

    async def find(self, query: FindQuery, *, after: object | None, limit: int) -> FindPage:
        """At most `limit` answers after the cursor, each page in its own short transaction."""
        ...

    async def count(self, query: FindQuery, *, cap: int) -> int:
        """How many entities match, counting at most `cap` + 1 (for a result limit)."""
        ...


# --- Retrieve (C-MOVE / C-GET) ----------------------------------------------------------
# What the retrieve services ask of the index: the stored instances under the entities an
# identifier selects (PS3.4 C.4.2.2.1), with where their data set lies, paged by keyset.


@dataclass(frozen=True, slots=True)
class InstanceLocation:
    """One stored instance as a C-STORE sub-operation needs it (no data set decoded)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str  # the stored data set's encoding
    storage_key: str
    dataset_offset: int  # first byte of the data set in the file
    file_size: int

    @property
    def dataset_size(self) -> int:
        return self.file_size - self.dataset_offset


@dataclass(frozen=True, slots=True)
class InstancePage:
    """One keyset page of instances; `after` is the cursor of the next page, None at the end."""

    instances: tuple[InstanceLocation, ...]
    after: object | None


class RetrieveIndex(Protocol):
    """The read side of the index for C-MOVE and C-GET (PS3.4 C.4.2, C.4.3)."""

    async def count(self, query: FindQuery, *, cap: int) -> int:
        """How many entities of `query.level` match, counting at most `cap` + 1."""
        ...

    async def instances(self, query: FindQuery, *, after: object | None, limit: int,
                        kinds: frozenset[tuple[str, str]] | None = None) -> InstancePage:
        """At most `limit` instances under the matching entities, after the cursor.

        `kinds`: only instances of these (SOP class, stored transfer syntax) pairs (one
        C-MOVE sub-association's share), so a selection split over several is read once.
        """
        ...

    async def instance_kinds(self, query: FindQuery) -> tuple[tuple[str, str], ...]:
        """The distinct (SOP class, stored transfer syntax) pairs of those instances."""
        ...
