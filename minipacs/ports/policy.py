"""Policies built from the configuration: the one place their defaults are written.

Each is what one configuration section means to the code that obeys it: `ServerLimits`
(``limits:``), `ConnectPolicy` (how we open associations to configured peers, from
``retrieve:`` and ``limits:``), `RetrievePolicy` (``retrieve:``), `CommitmentPolicy`
(``commitment:``), `TlsPolicy` (``tls:``). ``minipacs.config`` validates YAML into these
types, so an omitted key takes the default written here and nowhere else; the server, the
peers and the services take them as they are.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..proto.negotiation import DEFAULT_ASYNC_OPS_LIMIT, DEFAULT_MAX_PDU_LENGTH

__all__ = [
    "DEFAULT_ARTIM_TIMEOUT",
    "CommitmentPolicy",
    "ConnectPolicy",
    "PatientIssuers",
    "PeerCertificate",
    "RetrievePolicy",
    "ServerLimits",
    "TlsPolicy",
]

# PS3.8 §9.1.5: the ARTIM timer bounds association set-up and release, inbound and outbound.
DEFAULT_ARTIM_TIMEOUT: Final = 30.0


class PatientIssuers(enum.StrEnum):
    """A PATIENT-level retrieve of a Patient ID held under several issuers (PS3.4 C.4.2)."""

    ALL = "all"  # send every such patient's instances
    REFUSE = "refuse"  # answer 0xA900: the identifier does not name one patient


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Resource limits and timers of the server (``limits:``); seconds, 0 disables where
    documented (idle_timeout, association_timeout, shutdown_grace)."""

    max_associations: int = 500
    max_associations_per_address: int = 250
    max_handshakes: int = 1000
    handshake_timeout: float = 10.0
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH  # the largest PDU we receive
    artim_timeout: float = DEFAULT_ARTIM_TIMEOUT
    idle_timeout: float = 300.0
    association_timeout: float = 0.0
    async_ops_window: int = DEFAULT_ASYNC_OPS_LIMIT  # PS3.7 D.3.3.3, 0 = unlimited
    shutdown_grace: float = 10.0
    max_inflated_mb: int = 1024  # a Deflated data set's inflated size (C-STORE, conversion)


@dataclass(frozen=True, slots=True)
class ConnectPolicy:
    """How we open outbound associations to configured peers (C-MOVE sub-operations,
    Storage Commitment reports): shared per-peer slots, a connect timeout, bounded retries."""

    max_per_peer: int = 2
    connect_timeout: float = 10.0
    artim_timeout: float = DEFAULT_ARTIM_TIMEOUT
    attempts: int = 3  # tries to open one association, the first included
    backoff: float = 0.2  # seconds before the second try, doubled each time after
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH


@dataclass(frozen=True, slots=True)
class RetrievePolicy:
    """C-MOVE / C-GET SCP (``retrieve:``, PS3.4 C.4.2, C.4.3).

    `timeout` bounds each C-STORE sub-operation without progress; `connect` is how C-MOVE
    (and the Storage Commitment reports) reach the configured peers.
    """

    connect: ConnectPolicy = field(default_factory=ConnectPolicy)
    timeout: float = 60.0
    patient_issuers: PatientIssuers = PatientIssuers.ALL


@dataclass(frozen=True, slots=True)
class CommitmentPolicy:
    """Storage Commitment SCP report delivery (``commitment:``, PS3.4 J.3.3).

    `same_association`: report on the requestor's association while it is still open;
    otherwise (and when it has gone) on a new association to its `peers` entry. A failed
    delivery is retried after `retry_delay` seconds, doubled each time up to
    `max_retry_delay`, until `max_attempts` attempts or `give_up_after` seconds (0: no time
    limit) since the request. `timeout` bounds the wait for the N-EVENT-REPORT response.
    """

    same_association: bool = False
    retry_delay: float = 10.0
    max_retry_delay: float = 600.0
    max_attempts: int = 20
    give_up_after: float = 86400.0
    timeout: float = 30.0


class PeerCertificate(enum.StrEnum):
    """What a TLS listener asks of its clients' certificates (``tls.peer_certificate``)."""

    REQUIRE = "require"  # a certificate chaining to tls.ca_certificates, or no association
    VERIFY_IF_PRESENT = "verify-if-present"  # none is accepted; a bad one is refused
    IGNORE = "ignore"  # none is asked for (encryption without client authentication)


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """DICOM TLS (``tls:``, PS3.15 Annex B): our certificate and key (PEM; the server
    certificate of the TLS listeners and the client certificate of outbound associations),
    the CAs peers' certificates must chain to, and what we ask of clients' certificates.

    `check_hostname` also matches a peer's certificate against the host we connect to
    (outbound only); off by default, as peers are usually configured by address.
    """

    certificate: Path | None = None
    private_key: Path | None = None
    ca_certificates: Path | None = None  # None: the system's trust store (command line only)
    peer_certificate: PeerCertificate = PeerCertificate.REQUIRE
    check_hostname: bool = False
