"""`minipacs peers check`, `move` and `get`: reaching configured peers, C-MOVE and C-GET."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from minipacs.config import Config, ConfigError

from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    ProgressLine,
    add_association_options,
    add_config_option,
    add_key_option,
    add_peer_arguments,
    add_query_options,
    ae_title,
    repeated_key,
    run_configured,
    setup_logging,
    table,
    with_tls,
)

if TYPE_CHECKING:
    from minipacs.app.retrieve_scu import PeerCheck, RetrieveOutcome, RetrieveProgress

DEFAULT_RETRIEVE_TIMEOUT: Final = 60.0
MAX_FAILED_SHOWN: Final = 5  # Failed SOP Instance UIDs printed in the summary line
MEGABYTE: Final = 1e6

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """Add `peers`, `move` and `get` to the `minipacs` parser."""
    peers = commands.add_parser("peers", help="configured peers: check that each is reachable")
    actions = peers.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="C-ECHO each configured peer from our AE title (exit 1 if one fails)",
        description="C-ECHO each configured peer (or AE only) as C-MOVE would reach it: our "
                    "AE title, retrieve.connect_timeout, one attempt.")
    check.add_argument("ae", metavar="AE", nargs="?", help="check only this configured peer")
    add_config_option(check)
    check.add_argument("--json", action="store_true", help="print one JSON object per peer")
    check.set_defaults(handler=_cmd_peers_check)

    move = commands.add_parser(
        "move", help="ask a peer to send instances to an AE with C-MOVE",
        description="C-MOVE: the peer sends the selected instances to --dest (an AE it knows).")
    _retrieve_arguments(move)
    move.add_argument("--dest", required=True, type=ae_title, metavar="AE",
                      help="the Move Destination: an AE title the peer has configured")
    move.set_defaults(handler=with_tls("move", _cmd_move))

    get = commands.add_parser(
        "get", help="fetch instances from a peer with C-GET into a folder",
        description="C-GET: the instances come back on the same association and are "
                    "written as DIR/<SOP Instance UID>.dcm (data sets as received).")
    _retrieve_arguments(get)
    get.add_argument("--out", required=True, type=Path, metavar="DIR",
                     help="folder for the received files (created if missing)")
    get.add_argument("--sop-class", dest="sop_classes", action="append", default=[],
                     metavar="UID",
                     help="also accept this storage SOP class (repeatable; common ones are "
                          "built in)")
    get.set_defaults(handler=with_tls("get", _cmd_get))


def _retrieve_arguments(parser: argparse.ArgumentParser) -> None:
    add_peer_arguments(parser)
    add_key_option(
        parser, metavar="KEY=VALUE",
        help="a unique key as keyword or gggg,eeee, e.g. StudyInstanceUID=1.2.3 (repeatable, "
             "each key once; a backslash separates a list of UIDs)")  # fmt: skip
    add_query_options(parser)
    add_association_options(
        parser, timeout_default=DEFAULT_RETRIEVE_TIMEOUT,
        timeout_help="give up on a connection, or when no response or sub-operation came for "
                     "this many seconds")  # fmt: skip


# --- peers check --------------------------------------------------------------------------------


def _cmd_peers_check(args: argparse.Namespace) -> int:
    from minipacs.app import retrieve_scu as app

    def run(config: Config) -> int:
        if not config.peers:
            source = config.source or "the embedded defaults"
            raise app.RetrieveUsageError(f"no peers configured in {source}")
        results = app.peers_check(config, args.ae)
        if args.json:
            for result in results:
                print(json.dumps({"ae_title": result.ae_title, "host": result.host,
                                  "port": result.port, "tls": result.tls, "ok": result.ok,
                                  "associate_ms": _round(result.associate_ms),
                                  "echo_ms": _round(result.echo_ms),
                                  "problem": result.problem}))
        else:
            for line in _peer_lines(results):
                print(line)
        return EXIT_OK if all(result.ok for result in results) else EXIT_FAILED

    return run_configured("peers check", args.config, run,
                          usage=(app.RetrieveUsageError, ConfigError))


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 2)


def _peer_lines(results: list[PeerCheck]) -> list[str]:
    rows = []
    for result in results:
        if result.ok:
            outcome = (f"OK      association {result.associate_ms:.1f} ms, "
                       f"C-ECHO {result.echo_ms:.1f} ms")
        else:
            outcome = f"FAILED  {result.problem}"
        address = f"{result.host}:{result.port}{' TLS' if result.tls else ''}"
        rows.append([result.ae_title, address, outcome])
    return table(rows)


# --- move and get -------------------------------------------------------------------------------


def _checked_keys(args: argparse.Namespace, name: str) -> bool:
    """Set up logging; True when level, root and keys make a retrieve, else say why."""
    setup_logging("WARNING", quiet_pydicom=True)
    from minipacs.app import retrieve_scu as app
    from minipacs.app import scu

    try:
        scu.check_level(args.root, args.level)
        if (problem := repeated_key(args.keys)) is not None:
            raise ValueError(problem)
        app.check_keys(args.level, args.keys)
    except ValueError as exc:
        print(f"minipacs {name}: error: {exc}", file=sys.stderr)
        return False
    return True


def _cmd_move(args: argparse.Namespace) -> int:
    if not _checked_keys(args, "move"):
        return EXIT_USAGE
    from minipacs.app import retrieve_scu as app

    display = _RetrieveDisplay(sys.stderr, "C-MOVE")
    try:
        outcome = app.move(args.host, args.port, args.keys, level=args.level, root=args.root,
                           destination=args.dest, calling_ae=args.aet, called_ae=args.aec,
                           timeout=args.timeout, max_pdu=args.max_pdu, progress=display,
                           notify=display.notice, tls=args.tls_context)
    finally:
        display.clear()
    return _finish(outcome, f"C-MOVE {args.aec}@{args.host}:{args.port} to {args.dest}", None)


def _cmd_get(args: argparse.Namespace) -> int:
    if not _checked_keys(args, "get"):
        return EXIT_USAGE
    from minipacs.app import retrieve_scu as app

    display = _RetrieveDisplay(sys.stderr, "C-GET")
    try:
        outcome = app.get(args.host, args.port, args.keys, args.out, level=args.level,
                          root=args.root, extra_classes=args.sop_classes, calling_ae=args.aet,
                          called_ae=args.aec, timeout=args.timeout, max_pdu=args.max_pdu,
                          progress=display, notify=display.notice, tls=args.tls_context)
    except app.RetrieveUsageError as exc:
        print(f"minipacs get: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        display.clear()
    return _finish(outcome, f"C-GET {args.aec}@{args.host}:{args.port}", args.out)


def _finish(outcome: RetrieveOutcome, where: str, out: Path | None) -> int:
    line = _summary_line(outcome, where, out)
    print(line, file=sys.stdout if outcome.ok else sys.stderr)
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.ok else EXIT_FAILED


def _counts(outcome: RetrieveOutcome | RetrieveProgress) -> str:
    parts = [(outcome.completed, "completed"), (outcome.failed, "failed"),
             (outcome.warning, "warning"), (outcome.remaining, "remaining")]
    return ", ".join(f"{n} {word}" for n, word in parts if n is not None)


def _summary_line(outcome: RetrieveOutcome, where: str, out: Path | None) -> str:
    from minipacs.app import retrieve_scu as app

    counts = _counts(outcome)
    if outcome.status is None:  # no final response: why, and the last counts if any
        suffix = f" ({counts} at the last pending response)" if counts else ""
        line = f"{where}: {outcome.error}{suffix}"
    else:
        comment = f" ({outcome.error_comment})" if outcome.error_comment else ""
        line = f"{where}: {app.describe_status(outcome)}{comment}"
        if counts:
            line += f": {counts}"
        line += f" in {outcome.elapsed:.2f} s"
        if outcome.ok and not any((outcome.completed, outcome.failed, outcome.warning)):
            line += " (nothing matched the keys)"
    if outcome.failed_uids:
        shown = ", ".join(outcome.failed_uids[:MAX_FAILED_SHOWN])
        more = len(outcome.failed_uids) - MAX_FAILED_SHOWN
        line += f"; failed SOP instances ({len(outcome.failed_uids)}): {shown}"
        if more > 0:
            line += f" and {more} more"
    if out is not None and (outcome.files or outcome.status is not None):
        megabytes = outcome.bytes_written / MEGABYTE
        rate = megabytes / outcome.elapsed if outcome.elapsed > 0 else 0.0
        line += (f"; {outcome.files} file(s) written to {out} ({megabytes:.1f} MB, "
                 f"{rate:.1f} MB/s)")
        if outcome.write_failures:
            line += f", {outcome.write_failures} could not be written"
    return line


class _RetrieveDisplay(ProgressLine):
    """On a terminal, one progress line redrawn from the pending responses; else nothing."""

    def __init__(self, stream: TextIO, service: str) -> None:
        super().__init__(stream)
        self.service = service

    def __call__(self, progress: RetrieveProgress) -> None:
        if not self.due():
            return
        text = _counts(progress) or "waiting for the first response"
        if progress.files:
            text += f"; {progress.files} file(s), {progress.bytes_written / MEGABYTE:.1f} MB"
        self.draw(f"{self.service}: {text}")
