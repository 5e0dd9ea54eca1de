"""`minipacs echo`, `store` and `find`: C-ECHO, C-STORE and C-FIND to a remote AE."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    ProgressLine,
    add_association_options,
    add_key_option,
    add_paths_argument,
    add_peer_arguments,
    add_query_options,
    repeated_key,
    setup_logging,
    table,
    with_tls,
)

if TYPE_CHECKING:
    from minipacs.app.scu import FindKey, StoreProgress, StoreSummary

__all__ = ["add_commands"]

DEFAULT_ECHO_TIMEOUT: Final = 30.0
DEFAULT_STORE_TIMEOUT: Final = 30.0
DEFAULT_FIND_TIMEOUT: Final = 30.0
# A table cell longer than this is cut (the whole value is in --json).
MAX_CELL: Final = 40


def add_commands(commands: Commands) -> None:
    """Add `echo`, `store` and `find` to the `minipacs` parser."""
    echo = commands.add_parser("echo", help="send a C-ECHO (verification) to a DICOM peer")
    add_peer_arguments(echo)
    add_association_options(echo, timeout_default=DEFAULT_ECHO_TIMEOUT,
                            timeout_help="give up after this many seconds")
    echo.set_defaults(handler=with_tls("echo", _cmd_echo))

    store = commands.add_parser(
        "store", help="send DICOM files and folders (recursively) to a peer with C-STORE")
    add_peer_arguments(store)
    add_paths_argument(store)
    add_association_options(
        store, timeout_default=DEFAULT_STORE_TIMEOUT,
        timeout_help="give up on a connection, or a transfer making no progress, after this "
                     "many seconds")  # fmt: skip
    store.set_defaults(handler=with_tls("store", _cmd_store))

    find = commands.add_parser(
        "find", help="query a peer with C-FIND (Patient Root or Study Root)",
        description="C-FIND: print the answers as a table, or as DICOM JSON lines.")
    add_peer_arguments(find)
    add_key_option(
        find, metavar="KEY[=VALUE]",
        help="a key as keyword or gggg,eeee; without =VALUE it is a return key (repeatable, "
             "each key once; a backslash separates a list of values)")  # fmt: skip
    add_query_options(find)
    find.add_argument("--json", action="store_true",
                      help="print each answer as one line of DICOM JSON (PS3.18 F.2)")
    add_association_options(
        find, timeout_default=DEFAULT_FIND_TIMEOUT,
        timeout_help="give up on a connection or a response after this many seconds")
    find.set_defaults(handler=with_tls("find", _cmd_find))


# --- echo -------------------------------------------------------------------------------------


def _cmd_echo(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    from minipacs.app import scu as app

    ok, message = app.echo(args.host, args.port, calling_ae=args.aet, called_ae=args.aec,
                           timeout=args.timeout, max_pdu=args.max_pdu, tls=args.tls_context)
    print(message, file=sys.stdout if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_FAILED


# --- store ------------------------------------------------------------------------------------


def _cmd_store(args: argparse.Namespace) -> int:
    setup_logging("WARNING", quiet_pydicom=True)
    from minipacs.app import scu as app

    display = _StoreDisplay(sys.stderr)
    try:
        summary = app.store(args.host, args.port, args.paths, calling_ae=args.aet,
                            called_ae=args.aec, timeout=args.timeout, max_pdu=args.max_pdu,
                            progress=display, tls=args.tls_context)
    finally:
        display.clear()
    if summary.error is not None:
        print(f"minipacs store: {summary.error} ({summary.unsent} file(s) not sent)",
              file=sys.stderr)
        if not summary.attempted:
            return EXIT_FAILED  # nothing was tried: the one line above says it all
    print(_store_summary_line(summary), file=sys.stdout if summary.ok else sys.stderr)
    return EXIT_OK if summary.ok else EXIT_FAILED


class _StoreDisplay(ProgressLine):
    """A line per failed or warned file; on a terminal also one progress line, redrawn."""

    def __call__(self, progress: StoreProgress) -> None:
        outcome = progress.outcome
        if outcome is not None and outcome.label != "stored":
            self.notice(f"{outcome.label}: {outcome.source}: {outcome.reason}")
        if not self.due(final=progress.done >= progress.total):
            return
        rate = progress.bytes_sent / 1e6 / progress.elapsed if progress.elapsed > 0 else 0.0
        self.draw(f"stored {progress.stored}/{progress.total} ({progress.failed} failed) "
                  f"{rate:.1f} MB/s")


def _store_summary_line(summary: StoreSummary) -> str:
    return (f"{summary.stored} stored, {summary.warnings} warnings, {summary.failed} failed, "
            f"{summary.skipped} skipped in {summary.elapsed:.2f} s "
            f"({summary.instances_per_second:.1f} inst/s, "
            f"{summary.megabytes_per_second:.1f} MB/s)")


# --- find -------------------------------------------------------------------------------------


def _cmd_find(args: argparse.Namespace) -> int:
    setup_logging("WARNING", quiet_pydicom=True)
    from minipacs.app import scu as app

    try:
        app.check_level(args.root, args.level)
    except ValueError as exc:
        return _usage(str(exc))
    if (problem := repeated_key(args.keys)) is not None:
        return _usage(problem)
    keys = args.keys or app.default_keys(args.level)
    output = _FindOutput(keys, as_json=args.json, stream=sys.stdout)
    summary = app.find(args.host, args.port, keys, level=args.level, root=args.root,
                       calling_ae=args.aet, called_ae=args.aec, timeout=args.timeout,
                       max_pdu=args.max_pdu, on_answer=output, tls=args.tls_context)
    output.finish()
    print(summary.message, file=sys.stderr)
    return EXIT_OK if summary.ok else EXIT_FAILED


def _usage(problem: str) -> int:
    print(f"minipacs find: error: {problem}", file=sys.stderr)
    return EXIT_USAGE


class _FindOutput:
    """Answers as DICOM JSON lines (printed as they come) or one table at the end."""

    def __init__(self, keys: list[FindKey], *, as_json: bool, stream: TextIO) -> None:
        self.keys = keys
        self.as_json = as_json
        self.stream = stream
        self.rows: list[list[str]] = []

    def __call__(self, answer: Any) -> None:
        if self.as_json:
            print(json.dumps(answer.to_json_dict(), ensure_ascii=False), file=self.stream,
                  flush=True)
        else:
            self.rows.append([_cell(answer.get(key.tag)) for key in self.keys])

    def finish(self) -> None:
        if self.as_json or not self.rows:
            return
        header = [key.keyword for key in self.keys]
        for line in table([header, *self.rows], rule=True):
            print(line, file=self.stream)


def _cell(element: Any) -> str:
    """One value for the table: multiple values joined by backslash, long ones cut."""
    if element is None or element.value is None:
        return ""
    if element.VR == "SQ":
        return f"<{len(element.value)} item(s)>"
    values = element.value if element.VM > 1 else [element.value]
    text = "\\".join(str(value) for value in values).replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "\u2026"
