"""Ports: the protocols services depend on, and the value types that cross them.

Adapters (``minipacs.storage``, ``minipacs.index``, ``minipacs.net``) implement these;
services see nothing else, so they are tested with in-memory fakes (DESIGN principle 9).
One module per concern; everything is re-exported here, so services import from
``minipacs.ports``.
"""

from __future__ import annotations

from .channel import (
    AssociationClosed,
    AssociationInfo,
    Channel,
    DataStream,
    Peers,
    PeerUnreachable,
    Reply,
    Request,
)
from .index import (
    AddOutcome,
    AddResult,
    AttributeParser,
    DataSetError,
    DuplicatePolicy,
    Index,
    IndexWriteError,
    InstanceAttributes,
    InstanceRecord,
    PatientConflict,
    PatientConflictPolicy,
)
from .normalized import (
    CommitmentIndex,
    CommitmentItem,
    CommitmentState,
    CommitmentTransaction,
    MppsIndex,
    MppsRecord,
    StoredCopy,
    WorklistIndex,
)
from .query import (
    Condition,
    FindPage,
    FindQuery,
    InstanceLocation,
    InstancePage,
    JsonDataset,
    MatchKind,
    QueryIndex,
    QueryLevel,
    RetrieveIndex,
)
from .storage import (
    FileMeta,
    OutOfResources,
    Spool,
    Storage,
    StorageError,
    StoredFile,
)

__all__ = [
    "AddOutcome",
    "AddResult",
    "AssociationClosed",
    "AssociationInfo",
    "AttributeParser",
    "Channel",
    "CommitmentIndex",
    "CommitmentItem",
    "CommitmentState",
    "CommitmentTransaction",
    "Condition",
    "DataSetError",
    "DataStream",
    "DuplicatePolicy",
    "FileMeta",
    "FindPage",
    "FindQuery",
    "Index",
    "IndexWriteError",
    "InstanceAttributes",
    "InstanceLocation",
    "InstancePage",
    "InstanceRecord",
    "JsonDataset",
    "MatchKind",
    "MppsIndex",
    "MppsRecord",
    "OutOfResources",
    "PatientConflict",
    "PatientConflictPolicy",
    "PeerUnreachable",
    "Peers",
    "QueryIndex",
    "QueryLevel",
    "Reply",
    "Request",
    "RetrieveIndex",
    "Spool",
    "Storage",
    "StorageError",
    "StoredCopy",
    "StoredFile",
    "WorklistIndex",
]
