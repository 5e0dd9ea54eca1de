"""Command line: the only place that parses arguments and prints for humans.

Exit codes: 0 success, 1 the operation failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from minipacs import __version__, cli_worklist
from minipacs.config import (
    MAX_PDU_LENGTH,
    MIN_PDU_LENGTH,
    PORT_MAX,
    PORT_MIN,
    Config,
    ConfigError,
    LimitsConfig,
    check_ae_title,
    load_config,
)

if TYPE_CHECKING:
    from minipacs.app.ops import Deleted, RowCounts
    from minipacs.app.scu import FindKey, StoreProgress, StoreSummary

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# 128 + SIGINT, as shells report an interrupted command.
EXIT_INTERRUPTED = 130

DEFAULT_CALLING_AE = "MINIPACS_SCU"
DEFAULT_CALLED_AE = "ANY-SCP"
DEFAULT_ECHO_TIMEOUT = 30.0
DEFAULT_STORE_TIMEOUT = 30.0
DEFAULT_FIND_TIMEOUT = 30.0
FIND_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
FIND_ROOTS = ("patient", "study")
# A table cell longer than this is cut (the whole value is in --json).
MAX_CELL = 40
# Redraws of the progress line per second at most (a terminal is slow to scroll).
PROGRESS_INTERVAL = 0.1
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
_DEFAULT_MAX_PDU = LimitsConfig().max_pdu_length


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _port(text: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not PORT_MIN <= port <= PORT_MAX:
        raise argparse.ArgumentTypeError(f"{port} is out of range {PORT_MIN}-{PORT_MAX}")
    return port


def _ae_title(text: str) -> str:
    try:
        return check_ae_title(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return seconds


def _max_pdu(text: str) -> int:
    try:
        length = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not MIN_PDU_LENGTH <= length <= MAX_PDU_LENGTH:
        raise argparse.ArgumentTypeError(
            f"{length} is out of range {MIN_PDU_LENGTH}-{MAX_PDU_LENGTH}"
        )
    return length


def _existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {text!r}")
    return path


def add_max_pdu_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--max-pdu``: the maximum PDU length we advertise when we associate."""
    parser.add_argument(
        "--max-pdu", type=_max_pdu, default=_DEFAULT_MAX_PDU, metavar="N",
        help=f"maximum PDU length we advertise (default {_DEFAULT_MAX_PDU})",
    )  # fmt: skip


def add_association_options(
    parser: argparse.ArgumentParser, *, timeout: float, timeout_help: str
) -> None:
    """Add ``--aet``, ``--aec``, ``--timeout`` and ``--max-pdu``: how an SCU command associates.

    `timeout_help` says what the timeout bounds; the default is appended to it.
    """
    parser.add_argument(
        "--aet", type=_ae_title, default=DEFAULT_CALLING_AE,
        help=f"our (calling) AE title (default {DEFAULT_CALLING_AE})",
    )  # fmt: skip
    parser.add_argument(
        "--aec", type=_ae_title, default=DEFAULT_CALLED_AE,
        help=f"the peer's (called) AE title (default {DEFAULT_CALLED_AE})",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=_timeout, default=timeout, metavar="SECONDS",
        help=f"{timeout_help} (default {timeout:g})",
    )  # fmt: skip
    add_max_pdu_option(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``minipacs`` command."""
    parser = _Parser(prog="minipacs", description="An asyncio-native DICOM server.")
    parser.add_argument("--version", action="version", version=f"minipacs {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve", help="run the DICOM server in the foreground (logs on stderr)"
    )
    serve.add_argument(
        "--config", metavar="FILE", help="YAML configuration (default: embedded defaults)"
    )
    serve.add_argument(
        "--check", action="store_true", help="validate the configuration, print it and exit"
    )
    serve.set_defaults(handler=_cmd_serve)

    echo = commands.add_parser("echo", help="send a C-ECHO (verification) to a DICOM peer")
    echo.add_argument("host", metavar="HOST", help="peer host name or address")
    echo.add_argument("port", metavar="PORT", type=_port, help="peer TCP port")
    add_association_options(echo, timeout=DEFAULT_ECHO_TIMEOUT,
                            timeout_help="give up after this many seconds")
    echo.set_defaults(handler=_cmd_echo)

    store = commands.add_parser(
        "store", help="send DICOM files and folders (recursively) to a peer with C-STORE")
    store.add_argument("host", metavar="HOST", help="peer host name or address")
    store.add_argument("port", metavar="PORT", type=_port, help="peer TCP port")
    store.add_argument("paths", metavar="PATH", nargs="+", type=_existing_path,
                       help="DICOM file or folder (searched recursively)")
    add_association_options(
        store, timeout=DEFAULT_STORE_TIMEOUT,
        timeout_help="give up on a connection, or a transfer making no progress, after this "
                     "many seconds")  # fmt: skip
    store.set_defaults(handler=_cmd_store)
    _add_find_command(commands)
    _add_ops_commands(commands)
    cli_worklist.add_commands(commands)
    from minipacs import cli_retrieve  # here: it imports this module's helpers

    cli_retrieve.add_commands(commands)
    from minipacs import cli_commit  # here too: it imports this module's helpers

    cli_commit.add_commands(commands)
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


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if args.check:
        print(_describe_config(config))
        return EXIT_OK
    _setup_logging(config.logging.level)
    from minipacs.app import daemon as app  # lazily: only serving needs the index

    return app.serve(config)


def _cmd_echo(args: argparse.Namespace) -> int:
    _setup_logging("WARNING")
    from minipacs.app import scu as app

    ok, message = app.echo(
        args.host,
        args.port,
        calling_ae=args.aet,
        called_ae=args.aec,
        timeout=args.timeout,
        max_pdu=args.max_pdu,
    )
    print(message, file=sys.stdout if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_FAILED


def _cmd_store(args: argparse.Namespace) -> int:
    _setup_logging("WARNING")
    # pydicom logs every odd file header it reads; the per-file lines say what matters.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    from minipacs.app import scu as app

    display = _StoreDisplay(sys.stderr)
    try:
        summary = app.store(args.host, args.port, args.paths, calling_ae=args.aet,
                            called_ae=args.aec, timeout=args.timeout, max_pdu=args.max_pdu,
                            progress=display)
    finally:
        display.clear()
    if summary.error is not None:
        print(f"minipacs store: {summary.error} ({summary.unsent} file(s) not sent)",
              file=sys.stderr)
        if not summary.attempted:
            return EXIT_FAILED  # nothing was tried: the one line above says it all
    print(_store_summary_line(summary), file=sys.stdout if summary.ok else sys.stderr)
    return EXIT_OK if summary.ok else EXIT_FAILED


class _StoreDisplay:
    """A line per failed or warned file; on a terminal also one progress line, redrawn."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._drawn = False
        self._last = 0.0

    def __call__(self, progress: StoreProgress) -> None:
        outcome = progress.outcome
        if outcome is not None and outcome.label != "stored":
            self.clear()
            print(f"{outcome.label}: {outcome.source}: {outcome.reason}", file=self.stream)
        now = time.monotonic()
        if not self.tty or (now - self._last < PROGRESS_INTERVAL and self._drawn
                            and progress.done < progress.total):
            return
        self._last = now
        rate = progress.bytes_sent / 1e6 / progress.elapsed if progress.elapsed > 0 else 0.0
        self.stream.write(f"\r\x1b[Kstored {progress.stored}/{progress.total} "
                          f"({progress.failed} failed) {rate:.1f} MB/s")
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")  # carriage return, erase to the end of the line
            self.stream.flush()
            self._drawn = False


def _store_summary_line(summary: StoreSummary) -> str:
    return (f"{summary.stored} stored, {summary.warnings} warnings, {summary.failed} failed, "
            f"{summary.skipped} skipped in {summary.elapsed:.2f} s "
            f"({summary.instances_per_second:.1f} inst/s, "
            f"{summary.megabytes_per_second:.1f} MB/s)")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT, stream=sys.stderr, force=True
    )
    # Alembic narrates every plugin it loads at INFO; its migrations are logged by us.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))


def _describe_config(config: Config) -> str:
    source = config.source if config.source is not None else "embedded defaults"
    lines = [
        f"config OK: {source}",
        f"ae_title: {config.ae_title}",
        f"listen: {config.listen.host}:{config.listen.port}",
        f"storage: {config.storage.root} (fsync {'on' if config.storage.fsync else 'off'})",
        f"database: {config.database.url}",
        f"peers: {', '.join(config.peers) or '(none)'}",
    ]
    return "\n".join(lines)


# --- find ------------------------------------------------------------------------------------


def _find_key(text: str) -> FindKey:
    from minipacs.app import scu as app

    try:
        return app.parse_key(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_find_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    find = commands.add_parser(
        "find", help="query a peer with C-FIND (Patient Root or Study Root)",
        description="C-FIND: print the answers as a table, or as DICOM JSON lines.")
    find.add_argument("host", metavar="HOST", help="peer host name or address")
    find.add_argument("port", metavar="PORT", type=_port, help="peer TCP port")
    find.add_argument(
        "-k", "--key", dest="keys", action="append", type=_find_key, default=[],
        metavar="KEY[=VALUE]",
        help="a key as keyword or gggg,eeee; without =VALUE it is a return key (repeatable)",
    )  # fmt: skip
    find.add_argument("--level", type=str.upper, choices=FIND_LEVELS, default="STUDY",
                      help="Query/Retrieve Level (default STUDY)")
    find.add_argument("--root", choices=FIND_ROOTS, default="study",
                      help="information model: patient or study root (default study)")
    find.add_argument("--json", action="store_true",
                      help="print each answer as one line of DICOM JSON (PS3.18 F.2)")
    add_association_options(
        find, timeout=DEFAULT_FIND_TIMEOUT,
        timeout_help="give up on a connection or a response after this many seconds")
    find.set_defaults(handler=_cmd_find)


def _cmd_find(args: argparse.Namespace) -> int:
    _setup_logging("WARNING")
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    from minipacs.app import scu as app

    try:
        app.check_level(args.root, args.level)
    except ValueError as exc:
        print(f"minipacs find: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    keys = args.keys or app.default_keys(args.level)
    output = _FindOutput(keys, as_json=args.json, stream=sys.stdout)
    summary = app.find(args.host, args.port, keys, level=args.level, root=args.root,
                       calling_ae=args.aet, called_ae=args.aec, timeout=args.timeout,
                       max_pdu=args.max_pdu, on_answer=output)
    output.finish()
    print(summary.message, file=sys.stderr)
    return EXIT_OK if summary.ok else EXIT_FAILED


class _FindOutput:
    """Answers as DICOM JSON lines (printed as they come) or one table at the end."""

    def __init__(self, keys: list[FindKey], *, as_json: bool, stream: TextIO) -> None:
        self.keys = list(dict.fromkeys(keys))
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
        widths = [max(len(row[i]) for row in [header, *self.rows]) for i in range(len(header))]
        for row in [header, ["-" * width for width in widths], *self.rows]:
            line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            print(line.rstrip(), file=self.stream)


def _cell(element: Any) -> str:
    """One value for the table: multiple values joined by backslash, long ones cut."""
    if element is None or element.value is None:
        return ""
    if element.VR == "SQ":
        return f"<{len(element.value)} item(s)>"
    values = element.value if element.VM > 1 else [element.value]
    text = "\\".join(str(value) for value in values).replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "\u2026"


# --- operations: db upgrade|check|rebuild|backup, delete ------------------------------------

# Problems listed one per line up to this many, unless --verbose.
MAX_LISTED = 20


def _add_ops_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = commands.add_parser("db", help="index maintenance: upgrade, check, rebuild, backup")
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
    for parser in (upgrade, check, rebuild, backup, delete):
        parser.add_argument("--config", metavar="FILE",
                            help="YAML configuration (default: embedded defaults)")


def _ops(args: argparse.Namespace, name: str, operation: Callable[[Config], int]) -> int:
    """Load the configuration, run `operation`, turn its errors into one line and a code."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    _setup_logging("WARNING")
    from minipacs.app import ops as app

    try:
        return operation(config)
    except app.OpsUsageError as exc:
        print(f"minipacs {name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except app.OpsFailed as exc:
        print(f"minipacs {name}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _plural(count: int, word: str) -> str:
    if count == 1 or word.endswith("series"):
        return f"{count} {word}"
    if word.endswith("y"):
        return f"{count} {word[:-1]}ies"
    return f"{count} {word}es" if word.endswith(("ch", "sh", "s", "x")) else f"{count} {word}s"


def _rows(counts: RowCounts | Deleted) -> str:
    return ", ".join((_plural(counts.patients, "patient"), _plural(counts.studies, "study"),
                      _plural(counts.series, "series"), _plural(counts.instances, "instance")))


def _print_capped(lines: list[str], verbose: bool, file: TextIO = sys.stdout) -> None:
    shown = lines if verbose else lines[:MAX_LISTED]
    for line in shown:
        print(line, file=file)
    if len(lines) > len(shown):
        print(f"... and {len(lines) - len(shown)} more (--verbose lists them all)", file=file)


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    def run(config: Config) -> int:
        from minipacs.app import ops as app

        result = app.db_upgrade(config)
        if result.before == result.after:
            print(f"index already at revision {result.after}")
        else:
            print(f"index upgraded to revision {result.after} (was {result.before or 'empty'})")
        return EXIT_OK

    return _ops(args, "db upgrade", run)


def _cmd_db_check(args: argparse.Namespace) -> int:
    def run(config: Config) -> int:
        from minipacs.app import ops as app

        report = app.db_check(config, repair=args.repair)
        _print_capped([f"repaired {p.kind}: {p.key} ({p.detail})" for p in report.repaired],
                      args.verbose)
        kinds = Counter(p.kind for p in report.problems)
        found = ", ".join(_plural(n, kind) for kind, n in kinds.items()) or "no problems"
        print(f"checked {_plural(report.instances, 'instance')} and "
              f"{_plural(report.files, 'file')}: {found}")
        _print_capped([f"{p.kind}: {p.key} ({p.detail})" for p in report.problems],
                      args.verbose)
        if report.pending_deletes:
            print(f"{_plural(report.pending_deletes, 'file')} of an interrupted delete are "
                  "listed for removal: the next minipacs delete removes them")
        return EXIT_FAILED if report.problems else EXIT_OK

    return _ops(args, "db check", run)


def _cmd_db_rebuild(args: argparse.Namespace) -> int:
    def run(config: Config) -> int:
        from minipacs.app import ops as app

        result = app.db_rebuild(config, backup=not args.no_backup)
        if result.backup is not None:
            print(f"old index backed up to {result.backup} ({_rows(result.removed)})")
        print(f"indexed {result.indexed} of {_plural(result.files, 'file')} "
              f"({result.duplicates} duplicate, {len(result.skipped)} skipped): "
              f"{_rows(result.counts)}")
        _print_capped([f"skipped {key}: {reason}" for key, reason in result.skipped], False,
                      sys.stderr)
        return EXIT_FAILED if result.skipped else EXIT_OK

    return _ops(args, "db rebuild", run)


def _cmd_db_backup(args: argparse.Namespace) -> int:
    def run(config: Config) -> int:
        from minipacs.app import ops as app

        counts = app.db_backup(config, args.file)
        print(f"index backed up to {args.file} ({_rows(counts)})")
        return EXIT_OK

    return _ops(args, "db backup", run)


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
            print(f"removed {_plural(result.recovered, 'file')} left by an interrupted delete")
        print(f"deleted {result.target}: {_rows(result.deleted)}, "
              f"{_plural(result.files_removed, 'file')} removed")
        _print_capped(result.errors, False, sys.stderr)
        return EXIT_FAILED if result.errors else EXIT_OK

    return _ops(args, "delete", run)
