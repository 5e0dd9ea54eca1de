"""Command line: the only place that parses arguments and prints for humans.

Exit codes: 0 success, 1 the operation failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn

from minipacs import __version__
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

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# 128 + SIGINT, as shells report an interrupted command.
EXIT_INTERRUPTED = 130

DEFAULT_CALLING_AE = "MINIPACS_SCU"
DEFAULT_CALLED_AE = "ANY-SCP"
DEFAULT_ECHO_TIMEOUT = 30.0
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
    echo.add_argument(
        "--aet", type=_ae_title, default=DEFAULT_CALLING_AE,
        help=f"our (calling) AE title (default {DEFAULT_CALLING_AE})",
    )  # fmt: skip
    echo.add_argument(
        "--aec", type=_ae_title, default=DEFAULT_CALLED_AE,
        help=f"the peer's (called) AE title (default {DEFAULT_CALLED_AE})",
    )  # fmt: skip
    echo.add_argument(
        "--timeout", type=_timeout, default=DEFAULT_ECHO_TIMEOUT, metavar="SECONDS",
        help=f"give up after this many seconds (default {DEFAULT_ECHO_TIMEOUT:g})",
    )  # fmt: skip
    echo.add_argument(
        "--max-pdu", type=_max_pdu, default=_DEFAULT_MAX_PDU, metavar="N",
        help=f"maximum PDU length we advertise (default {_DEFAULT_MAX_PDU})",
    )  # fmt: skip
    echo.set_defaults(handler=_cmd_echo)
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
    from minipacs import app  # lazily: only serving needs the whole composition root

    return app.serve(config)


def _cmd_echo(args: argparse.Namespace) -> int:
    _setup_logging("WARNING")
    from minipacs import app

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
