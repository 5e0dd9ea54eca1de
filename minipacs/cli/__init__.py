"""Command line: the only place that parses arguments and prints for humans.

One module per command group — `serve`, `scu` (echo, store, find), `retrieve` (peers check,
move, get), `commit`, `worklist`, `db` (db upgrade|check|rebuild|backup, delete), `user`
(user add) — on the helpers of `common`. Exit codes: 0 success, 1 the operation failed,
2 usage or configuration error, 130 interrupted.
"""

from __future__ import annotations

import argparse

from minipacs import __version__

from . import commit, db, retrieve, scu, serve, user, worklist
from .common import EXIT_INTERRUPTED, EXIT_USAGE, Parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``minipacs`` command."""
    parser = Parser(prog="minipacs", description="An asyncio-native DICOM server.")
    parser.add_argument("--version", action="version", version=f"minipacs {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (serve, scu, retrieve, commit, worklist, db, user):
        group.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``minipacs`` command and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors end here
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
