"""`minipacs db upgrade|check|rebuild|backup|copy` and `minipacs delete`: index maintenance."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from minipacs.config import Config

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    MAX_LISTED,
    Commands,
    ProgressLine,
    add_config_option,
    plural,
    print_capped,
    run_configured,
)

if TYPE_CHECKING:
    from minipacs.app.ops import Deleted, RowCounts

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """Add `db upgrade|check|rebuild|backup` and `delete` to the `minipacs` parser."""
    db = commands.add_parser("db", help="index maintenance: upgrade, check, rebuild, backup, "
                                        "copy")
    actions = db.add_subparsers(dest="action", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="create the index or apply its migrations")
    upgrade.set_defaults(handler=_cmd_db_upgrade)
    check = actions.add_parser(
        "check", help="compare index and files: missing, orphan, resized, corrupted (exit 1)")
    check.add_argument("--verbose", action="store_true",
                       help=f"list every problem (default: the first {MAX_LISTED})")
    check.add_argument("--repair", action="store_true",
                       help="set orphan files aside (store/.orphans/), delete rows of missing "
                            "files, finish interrupted deletes; altered files are only listed")
    check.set_defaults(handler=_cmd_db_check)
    rebuild = actions.add_parser(
        "rebuild", help="re-index every stored file into an emptied index (backed up first)")
    rebuild.add_argument("--no-backup", action="store_true",
                         help="do not back the old index up (required for non-SQLite URLs)")
    rebuild.set_defaults(handler=_cmd_db_rebuild)
    backup = actions.add_parser(
        "backup", help="copy the live SQLite index consistently (online backup API)")
    backup.add_argument("file", metavar="FILE", type=Path, help="the copy to write")
    backup.set_defaults(handler=_cmd_db_backup)
    copy = actions.add_parser(
        "copy", help="copy the whole index into another, empty database (all or nothing)")
    copy.add_argument("--to", metavar="URL", required=True,
                      help="the destination database URL (as database.url), e.g. "
                           "postgresql://user@host/db or sqlite:///index.db")
    copy.set_defaults(handler=_cmd_db_copy)

    delete = commands.add_parser(
        "delete", help="delete a study, series or patient: index rows, then their files")
    target = delete.add_mutually_exclusive_group(required=True)
    target.add_argument("--study", metavar="UID", help="a Study Instance UID")
    target.add_argument("--series", metavar="UID", help="a Series Instance UID")
    target.add_argument("--patient", metavar="ID", help="a Patient ID")
    delete.add_argument("--issuer", metavar="ISSUER",
                        help="the Issuer of Patient ID of --patient ('' for none)")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=_cmd_delete)
    add_config_option(upgrade, check, rebuild, backup, copy, delete)


def _rows(counts: RowCounts | Deleted) -> str:
    return ", ".join((plural(counts.patients, "patient"), plural(counts.studies, "study"),
                      plural(counts.series, "series"), plural(counts.instances, "instance")))


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    def run(config: Config) -> int:
        from minipacs.app import ops as app

        result = app.db_upgrade(config)
        if result.before == result.after:
            print(f"index already at revision {result.after}")
        else:
            print(f"index upgraded to revision {result.after} (was {result.before or 'empty'})")
        return EXIT_OK

    return run_configured("db upgrade", args.config, run)


def _cmd_db_check(args: argparse.Namespace) -> int:
    def run(config: Config) -> int:
        from minipacs.app import ops as app

        report = app.db_check(config, repair=args.repair)
        print_capped([f"repaired {p.kind}: {p.key} ({p.detail})" for p in report.repaired],
                     args.verbose)
        kinds = Counter(p.kind for p in report.problems)
        found = ", ".join(plural(n, kind) for kind, n in kinds.items()) or "no problems"
        print(f"checked {plural(report.instances, 'instance')} and "
              f"{plural(report.files, 'file')}: {found}")
        print_capped([f"{p.kind}: {p.key} ({p.detail})" for p in report.problems],
                     args.verbose)
        if report.pending_deletes:
            print(f"{plural(report.pending_deletes, 'file')} of an interrupted delete are "
                  "listed for removal: the next minipacs delete removes them")
        return EXIT_FAILED if report.problems else EXIT_OK

    return run_configured("db check", args.config, run)


def _cmd_db_rebuild(args: argparse.Namespace) -> int:
    def run(config: Config) -> int:
        from minipacs.app import ops as app

        result = app.db_rebuild(config, backup=not args.no_backup)
        if result.backup is not None:
            print(f"old index backed up to {result.backup} ({_rows(result.removed)})")
        print(f"indexed {result.indexed} of {plural(result.files, 'file')} "
              f"({result.duplicates} duplicate, {len(result.skipped)} skipped): "
              f"{_rows(result.counts)}")
        print_capped([f"skipped {key}: {reason}" for key, reason in result.skipped], False,
                     sys.stderr)
        return EXIT_FAILED if result.skipped else EXIT_OK

    return run_configured("db rebuild", args.config, run)


def _cmd_db_backup(args: argparse.Namespace) -> int:
    def run(config: Config) -> int:
        from minipacs.app import ops as app

        counts = app.db_backup(config, args.file)
        print(f"index backed up to {args.file} ({_rows(counts)})")
        return EXIT_OK

    return run_configured("db backup", args.config, run)


def _cmd_db_copy(args: argparse.Namespace) -> int:
    def run(config: Config) -> int:
        from minipacs.app import copying as app

        line = ProgressLine(sys.stderr)

        def progress(table: str, rows: int) -> None:
            if line.due():
                line.draw(f"copying {table}: {rows} rows")

        try:
            result = app.db_copy(config, args.to, progress=progress)
        finally:
            line.clear()
        total = sum(result.rows.values())
        tables = ", ".join(f"{n} {name}" for name, n in result.rows.items() if n)
        print(f"copied {plural(total, 'row')} to {result.destination} in "
              f"{result.seconds:.1f} s ({tables or 'an empty index'})")
        print("point database.url at it, then check it against the store: minipacs db check")
        return EXIT_OK

    return run_configured("db copy", args.config, run)


def _cmd_delete(args: argparse.Namespace) -> int:
    def run(config: Config) -> int:
        from minipacs.app import ops as app

        if args.issuer is not None and args.patient is None:
            raise app.OpsUsageError("--issuer goes with --patient")
        if args.patient is not None and not args.patient.strip():
            raise app.OpsUsageError("an empty Patient ID names no patient: use --study")
        level, uid = next((level, uid) for level, uid in (
            (app.Level.STUDY, args.study), (app.Level.SERIES, args.series),
            (app.Level.PATIENT, args.patient)) if uid is not None)
        target = app.resolve_delete(config, app.DeleteTarget(level, uid, args.issuer))
        if not args.yes:
            if not sys.stdin.isatty():
                raise app.OpsUsageError("not a terminal: confirm with --yes")
            answer = input(f"delete {target} with its files? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return EXIT_FAILED
        result = app.delete(config, target)
        if result.recovered:
            print(f"removed {plural(result.recovered, 'file')} left by an interrupted delete")
        print(f"deleted {result.target}: {_rows(result.deleted)}, "
              f"{plural(result.files_removed, 'file')} removed")
        print_capped(result.errors, False, sys.stderr)
        return EXIT_FAILED if result.errors else EXIT_OK

    return run_configured("delete", args.config, run)
