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
    AssociationUsage,
    Channel,
    DataStream,
    MessageNotEncodable,
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
from .metrics import NO_METRICS, Metrics, NoMetrics
from .normalized import (
    CommitmentClaim,
    CommitmentIndex,
    CommitmentItem,
    CommitmentState,
    CommitmentTransaction,
    MppsIndex,
    MppsRecord,
    StoredCopy,
    WorklistIndex,
)
from .policy import (
    DEFAULT_PROCESS_LEASE,
    CommitmentPolicy,
    ConnectPolicy,
    PatientIssuers,
    RetrievePolicy,
    ServerLimits,
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
from .security import AllowAll, Operation, Permissions, Principal
from .storage import (
    FileMeta,
    OutOfResources,
    Spool,
    Storage,
    StorageError,
    StoredFile,
)

__all__ = [
    "DEFAULT_PROCESS_LEASE",
    "NO_METRICS",
    "AddOutcome",
    "AddResult",
    "AllowAll",
    "AssociationClosed",
    "AssociationInfo",
    "AssociationUsage",
    "AttributeParser",
    "Channel",
    "CommitmentClaim",
    "CommitmentIndex",
    "CommitmentItem",
    "CommitmentPolicy",
    "CommitmentState",
    "CommitmentTransaction",
    "Condition",
    "ConnectPolicy",
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
    "MessageNotEncodable",
    "Metrics",
    "MppsIndex",
    "MppsRecord",
    "NoMetrics",
    "Operation",
    "OutOfResources",
    "PatientConflict",
    "PatientConflictPolicy",
    "PatientIssuers",
    "PeerUnreachable",
    "Peers",
    "Permissions",
    "Principal",
    "QueryIndex",
    "QueryLevel",
    "Reply",
    "Request",
    "RetrieveIndex",
    "RetrievePolicy",
    "ServerLimits",
    "Spool",
    "Storage",
    "StorageError",
    "StoredCopy",
    "StoredFile",
    "WorklistIndex",
]
