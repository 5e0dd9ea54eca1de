"""`minipacs commit`: ask a Storage Commitment SCP to commit files' instances (PS3.4 J.3).

Exit codes: 0 every instance committed, 1 not all committed (or no report), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Final

from .common import (
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    add_association_options,
    add_paths_argument,
    add_peer_arguments,
    port,
    setup_logging,
    with_tls,
)

__all__ = ["add_commands"]

DEFAULT_COMMIT_TIMEOUT: Final = 60.0
DEFAULT_LISTEN_HOST: Final = "0.0.0.0"


def add_commands(commands: Commands) -> None:
    """Add `commit` to the `minipacs` parser."""
    commit = commands.add_parser(
        "commit", help="ask a peer to commit (keep safe) the instances of DICOM files and "
                       "wait for its storage commitment report")
    add_peer_arguments(commit)
    add_paths_argument(commit)
    add_association_options(
        commit, timeout_default=DEFAULT_COMMIT_TIMEOUT,
        timeout_help="give up on the connection, the N-ACTION response or the report after "
                     "this many seconds each", long_ae_names=True)  # fmt: skip
    commit.add_argument(
        "--listen", type=port, metavar="PORT",
        help="release after the N-ACTION and take the report on an association the peer "
             "opens to this port (default: wait for it on the same association); with --tls "
             "that association is TLS too, --cert is our server certificate and --ca, when "
             "given, checks the peer's",
    )  # fmt: skip
    commit.add_argument(
        "--listen-host", default=DEFAULT_LISTEN_HOST, metavar="HOST",
        help=f"address to listen on with --listen (default {DEFAULT_LISTEN_HOST})",
    )  # fmt: skip
    commit.set_defaults(handler=with_tls("commit", _cmd_commit))


def _cmd_commit(args: argparse.Namespace) -> int:
    setup_logging("WARNING", quiet_pydicom=True)
    from minipacs.app import UsageError
    from minipacs.app import commit as app
    from minipacs.app.tls import listener_tls

    listener = None
    if args.tls and args.listen is not None:  # the report comes back over TLS too
        try:
            listener = listener_tls(args.cert, args.tls_key, args.ca)
        except UsageError as exc:
            print(f"minipacs commit: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    outcome = app.commit(args.host, args.port, args.paths, calling_ae=args.aet,
                         called_ae=args.aec, timeout=args.timeout, max_pdu=args.max_pdu,
                         listen_port=args.listen, listen_host=args.listen_host,
                         tls=args.tls_context, listen_tls=listener)
    for line in outcome.lines:
        state = "committed" if line.committed else "failed"
        detail = "" if line.committed else f": {line.reason}"
        print(f"{state:9} {line.sop_instance_uid} ({line.source}){detail}")
    if outcome.code == EXIT_OK:
        print(outcome.message)
    else:
        print(f"minipacs commit: {outcome.message}", file=sys.stderr)
    return outcome.code
