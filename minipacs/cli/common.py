"""What every command of the command line shares: exit codes, argument types, options,
logging, configuration loading, the progress line and tables sized for a terminal.

Exit codes: 0 success, 1 the operation failed, 2 usage or configuration error, 130
interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn, TextIO, TypeVar

from minipacs.config import (
    MAX_PDU_LENGTH,
    MIN_PDU_LENGTH,
    PORT_MAX,
    PORT_MIN,
    Config,
    ConfigError,
    ServerLimits,
    check_ae_title,
    check_host,
    load_config,
)

from .logformat import EscapingFormatter, drop_pydicom_warnings

if TYPE_CHECKING:
    import ssl

    from minipacs.app.scu import FindKey

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
# 128 + SIGINT, as shells report an interrupted command.
EXIT_INTERRUPTED: Final = 130

DEFAULT_CALLING_AE: Final = "MINIPACS_SCU"
DEFAULT_CALLED_AE: Final = "ANY-SCP"
FIND_LEVELS: Final = ("PATIENT", "STUDY", "SERIES", "IMAGE")
FIND_ROOTS: Final = ("patient", "study")
# Redraws of a progress line per second at most (a terminal is slow to scroll).
PROGRESS_INTERVAL: Final = 0.1
LOG_FORMAT: Final = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s %(message)s"
LOG_DATE_FORMAT: Final = "%Y-%m-%dT%H:%M:%S"
DEFAULT_MAX_PDU: Final = ServerLimits().max_pdu_length
# Problems listed one per line up to this many, unless --verbose.
MAX_LISTED: Final = 20
_ERASE_LINE: Final = "\r\x1b[K"  # carriage return, erase to the end of the line

Commands = argparse._SubParsersAction  # type: ignore[type-arg]
T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# --- argument types ---------------------------------------------------------------------------


def bounded_int(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argument type: a decimal integer from `low` to `high`; `what` names it in errors."""

    def parse(text: str) -> int:
        try:
            number = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{number} is out of range {low}-{high}")
        return number

    return parse


# A peer's TCP port; one to listen on may also be 0 (any free port).
port = bounded_int(PORT_MIN, PORT_MAX, "a port number")
listen_port = bounded_int(0, PORT_MAX, "a port number")
max_pdu = bounded_int(MIN_PDU_LENGTH, MAX_PDU_LENGTH, "an integer")


def from_checker(check: Callable[[str], T]) -> Callable[[str], T]:
    """An argument type from a function that raises ValueError on bad input."""

    def parse(text: str) -> T:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


# An AE title without its non-significant spaces (PS3.5 Table 6.2-1); a host to listen on.
ae_title = from_checker(check_ae_title)
host = from_checker(check_host)


def find_key(text: str) -> FindKey:
    """One ``-k KEY[=VALUE]`` of find, move and get."""
    from minipacs.app.scu import parse_key  # lazily: it imports the DIMSE services

    return from_checker(parse_key)(text)


def timeout(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return seconds


def existing_path(text: str) -> Path:
    """A file or folder that exists."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {text!r}")
    return path


def repeated_key(keys: Iterable[FindKey]) -> str | None:
    """A usage error when a key is given twice (the second would silently replace the first)."""
    seen: set[int] = set()
    for key in keys:
        if key.tag in seen:
            return (f"-k {key.keyword} is given twice: give each key once (a list of values "
                    f"is one key with backslashes, e.g. {key.keyword}=A\\B)")
        seen.add(key.tag)
    return None


# --- options ------------------------------------------------------------------------------------


def add_config_option(*parsers: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` to each parser."""
    for parser in parsers:
        parser.add_argument("--config", metavar="FILE",
                            help="YAML configuration (default: embedded defaults)")


def add_peer_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the positional HOST and PORT of the peer an SCU command talks to."""
    parser.add_argument("host", metavar="HOST", help="peer host name or address")
    parser.add_argument("port", metavar="PORT", type=port, help="peer TCP port")


def add_paths_argument(parser: argparse.ArgumentParser) -> None:
    """Add the positional PATHs of DICOM files and folders to send or commit."""
    parser.add_argument("paths", metavar="PATH", nargs="+", type=existing_path,
                        help="DICOM file or folder (searched recursively)")


def add_key_option(parser: argparse.ArgumentParser, *, metavar: str, help: str) -> None:
    """Add ``-k/--key`` (repeatable, each attribute once): the identifier's keys."""
    parser.add_argument("-k", "--key", dest="keys", action="append", type=find_key,
                        default=[], metavar=metavar, help=help)


def add_max_pdu_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--max-pdu``: the maximum PDU length we advertise when we associate."""
    parser.add_argument(
        "--max-pdu", type=max_pdu, default=DEFAULT_MAX_PDU, metavar="N",
        help=f"maximum PDU length we advertise (default {DEFAULT_MAX_PDU})",
    )  # fmt: skip


def add_association_options(
    parser: argparse.ArgumentParser, *, timeout_default: float, timeout_help: str,
    long_ae_names: bool = False,
) -> None:
    """Add ``--aet``, ``--aec``, ``--timeout`` and ``--max-pdu``: how an SCU command associates.

    `timeout_help` says what the timeout bounds; the default is appended to it.
    `long_ae_names` also names the AE titles ``--calling-ae`` and ``--called-ae``.
    """
    calling, called = ("--aet",), ("--aec",)
    if long_ae_names:
        calling, called = ("--calling-ae", *calling), ("--called-ae", *called)
    parser.add_argument(
        *calling, dest="aet", type=ae_title, default=DEFAULT_CALLING_AE,
        help=f"our (calling) AE title (default {DEFAULT_CALLING_AE})",
    )  # fmt: skip
    parser.add_argument(
        *called, dest="aec", type=ae_title, default=DEFAULT_CALLED_AE,
        help=f"the peer's (called) AE title (default {DEFAULT_CALLED_AE})",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=timeout, default=timeout_default, metavar="SECONDS",
        help=f"{timeout_help} (default {timeout_default:g})",
    )  # fmt: skip
    add_max_pdu_option(parser)
    add_tls_options(parser)


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--tls``, ``--cert``, ``--tls-key`` (also ``--key`` where that is free) and
    ``--ca``: DICOM TLS (PS3.15 B.1, BCP 195). Add it after the command's ``-k/--key``.

    The command's handler must be wrapped in `with_tls`, which builds ``args.tls_context``.
    """
    group = parser.add_argument_group("DICOM TLS (TLS 1.2 or 1.3, AEAD cipher suites)")
    group.add_argument("--tls", action="store_true",
                       help="associate over TLS (the peer's TLS port, e.g. 2762)")
    group.add_argument("--cert", type=existing_path, metavar="FILE",
                       help="our certificate (PEM), for peers that ask for one")
    # find, move and get already take -k/--key (query keys): there it is --tls-key only.
    names = ("--tls-key",) if parser.get_default("keys") is not None else ("--tls-key", "--key")
    group.add_argument(*names, dest="tls_key", type=existing_path, metavar="FILE",
                       help="the private key of --cert (PEM; default: read from the --cert "
                            "file)")
    group.add_argument("--ca", type=existing_path, metavar="FILE",
                       help="the CA certificates (PEM) the peer's certificate must chain to "
                            "(default: the system's trust store)")


def with_tls(name: str, handler: Callable[[argparse.Namespace], int]
             ) -> Callable[[argparse.Namespace], int]:
    """`handler` with ``args.tls_context`` set from the TLS options (None without --tls);
    a problem with them is one line and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            args.tls_context = tls_context(args)
        except ValueError as exc:
            print(f"minipacs {name}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return handler(args)

    return run


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client context of ``--tls --cert --key --ca``; ValueError naming the option."""
    given = [option for option, value in (("--cert", args.cert), ("--tls-key", args.tls_key),
                                          ("--ca", args.ca)) if value is not None]
    if not args.tls:
        if given:
            raise ValueError(f"{given[0]} needs --tls")
        return None
    from minipacs.app import UsageError
    from minipacs.app.tls import client_tls  # lazily: it imports the network layer

    try:
        return client_tls(args.cert, args.tls_key, args.ca)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


def add_query_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--level`` and ``--root``: the Query/Retrieve level and information model."""
    parser.add_argument("--level", type=str.upper, choices=FIND_LEVELS, default="STUDY",
                        help="Query/Retrieve Level (default STUDY)")
    parser.add_argument("--root", choices=FIND_ROOTS, default="study",
                        help="information model: patient or study root (default study)")


# --- running a command ----------------------------------------------------------------------


def setup_logging(level: str, *, quiet_pydicom: bool = False) -> None:
    """Log to stderr at `level`, every message escaped (logformat.py); `quiet_pydicom`
    hides pydicom's notes on odd values."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter(LOG_FORMAT, LOG_DATE_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    drop_pydicom_warnings()  # pydicom logs them too; printed raw they would bypass escaping
    # Alembic narrates every plugin it loads at INFO; its migrations are logged by us.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    if quiet_pydicom:
        # pydicom logs every odd header or value it reads; our own lines say what matters.
        logging.getLogger("pydicom").setLevel(logging.ERROR)


def configured(path: str | None) -> Config | None:
    """The configuration at `path`, or None after printing its one-line error."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def run_configured(name: str, path: str | None, operation: Callable[[Config], int], *,
                   usage: tuple[type[Exception], ...] = (),
                   failed: tuple[type[Exception], ...] = ()) -> int:
    """Load the configuration and run `operation`; its errors become one line and a code.

    The app's UsageError (and `usage`) exits 2, its OperationFailed (and `failed`) exits 1.
    """
    config = configured(path)
    if config is None:
        return EXIT_USAGE
    setup_logging("WARNING", quiet_pydicom=True)
    from minipacs.app import OperationFailed, UsageError

    try:
        return operation(config)
    except (UsageError, *usage) as exc:
        print(f"minipacs {name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OperationFailed, *failed) as exc:
        print(f"minipacs {name}: {exc}", file=sys.stderr)
        return EXIT_FAILED


# --- output ---------------------------------------------------------------------------------


class ProgressLine:
    """One status line redrawn in place on a terminal, at most every PROGRESS_INTERVAL."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._drawn = False
        self._last = 0.0

    def due(self, *, final: bool = False) -> bool:
        """True when a redraw is wanted now (always for the `final` one)."""
        if not self.tty:
            return False
        now = time.monotonic()
        if self._drawn and not final and now - self._last < PROGRESS_INTERVAL:
            return False
        self._last = now
        return True

    def draw(self, text: str) -> None:
        self.stream.write(f"{_ERASE_LINE}{text}")
        self.stream.flush()
        self._drawn = True

    def notice(self, message: str) -> None:
        """A line of its own, above the progress line."""
        self.clear()
        print(message, file=self.stream, flush=True)

    def clear(self) -> None:
        if self._drawn:
            self.stream.write(_ERASE_LINE)
            self.stream.flush()
            self._drawn = False


def display_width(text: str) -> int:
    """Columns `text` takes on a terminal: wide East Asian characters take two, combining
    marks none (Unicode UAX #11)."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def table(rows: Sequence[Sequence[str]], *, rule: bool = False) -> list[str]:
    """Rows as lines of left-aligned columns two spaces apart, aligned by display width;
    `rule` underlines the first row (the header) with dashes as wide as each column."""
    if not rows:
        return []
    widths = [max(display_width(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(cell + " " * (width - display_width(cell))
                         for cell, width in zip(row, widths, strict=True)).rstrip()

    lines = [line(row) for row in rows]
    if rule:
        lines.insert(1, line(["-" * width for width in widths]))
    return lines


def plural(count: int, word: str) -> str:
    """'1 study', '2 studies', '3 series', '2 matches'."""
    if count == 1 or word.endswith("series"):
        return f"{count} {word}"
    if word.endswith("y"):
        return f"{count} {word[:-1]}ies"
    return f"{count} {word}es" if word.endswith(("ch", "sh", "s", "x")) else f"{count} {word}s"


def print_capped(lines: list[str], verbose: bool, file: TextIO | None = None) -> None:
    """Print up to MAX_LISTED lines (all with `verbose`) and say how many were left out."""
    stream = sys.stdout if file is None else file
    shown = lines if verbose else lines[:MAX_LISTED]
    for line in shown:
        print(line, file=stream)
    if len(lines) > len(shown):
        print(f"... and {len(lines) - len(shown)} more (--verbose lists them all)", file=stream)
