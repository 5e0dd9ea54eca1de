"""`minipacs commit`: ask a Storage Commitment SCP to commit files' instances (PS3.4 J.3).

Part of the command line (cli.py builds the parser and calls `add_commands`); exit codes as
there: 0 every instance committed, 1 not all committed (or no report), 2 usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Final

from minipacs.cli import (
    DEFAULT_CALLED_AE,
    DEFAULT_CALLING_AE,
    EXIT_OK,
    _ae_title,
    _existing_path,
    _port,
    _setup_logging,
    _timeout,
    add_max_pdu_option,
)

__all__ = ["add_commands"]

DEFAULT_COMMIT_TIMEOUT: Final = 60.0
DEFAULT_LISTEN_HOST: Final = "0.0.0.0"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commit = commands.add_parser(
        "commit", help="ask a peer to commit (keep safe) the instances of DICOM files and "
                       "wait for its storage commitment report")
    commit.add_argument("host", metavar="HOST", help="peer host name or address")
    commit.add_argument("port", metavar="PORT", type=_port, help="peer TCP port")
    commit.add_argument("paths", metavar="PATH", nargs="+", type=_existing_path,
                        help="DICOM file or folder (searched recursively)")
    commit.add_argument(
        "--calling-ae", "--aet", dest="calling_ae", type=_ae_title,
        default=DEFAULT_CALLING_AE,
        help=f"our (calling) AE title (default {DEFAULT_CALLING_AE})",
    )  # fmt: skip
    commit.add_argument(
        "--called-ae", "--aec", dest="called_ae", type=_ae_title, default=DEFAULT_CALLED_AE,
        help=f"the peer's (called) AE title (default {DEFAULT_CALLED_AE})",
    )  # fmt: skip
    commit.add_argument(
        "--timeout", type=_timeout, default=DEFAULT_COMMIT_TIMEOUT, metavar="SECONDS",
        help="give up on the connection, the N-ACTION response or the report after this "
             f"many seconds each (default {DEFAULT_COMMIT_TIMEOUT:g})",
    )  # fmt: skip
    commit.add_argument(
        "--listen", type=_port, metavar="PORT",
        help="release after the N-ACTION and take the report on an association the peer "
             "opens to this port (default: wait for it on the same association)",
    )  # fmt: skip
    commit.add_argument(
        "--listen-host", default=DEFAULT_LISTEN_HOST, metavar="HOST",
        help=f"address to listen on with --listen (default {DEFAULT_LISTEN_HOST})",
    )  # fmt: skip
    add_max_pdu_option(commit)
    commit.set_defaults(handler=_cmd_commit)


def _cmd_commit(args: argparse.Namespace) -> int:
    _setup_logging("WARNING")
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    from minipacs.app import commit as app

    outcome = app.commit(args.host, args.port, args.paths, calling_ae=args.calling_ae,
                         called_ae=args.called_ae, timeout=args.timeout,
                         max_pdu=args.max_pdu, listen_port=args.listen,
                         listen_host=args.listen_host)
    for line in outcome.lines:
        state = "committed" if line.committed else "failed"
        detail = "" if line.committed else f": {line.reason}"
        print(f"{state:9} {line.sop_instance_uid} ({line.source}){detail}")
    if outcome.code == EXIT_OK:
        print(outcome.message)
    else:
        print(f"minipacs commit: {outcome.message}", file=sys.stderr)
    return outcome.code
