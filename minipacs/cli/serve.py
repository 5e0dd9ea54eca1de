"""`minipacs serve`: run the DICOM server in the foreground, or check its configuration."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from minipacs.config import Config, ConfigError, describe_operations

from .common import (
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    add_config_option,
    configured,
    host,
    listen_port,
    setup_logging,
)

__all__ = ["add_commands", "describe"]


def add_commands(commands: Commands) -> None:
    """Add `serve` to the `minipacs` parser."""
    serve = commands.add_parser(
        "serve", help="run the DICOM server in the foreground (logs on stderr)")
    add_config_option(serve)
    serve.add_argument(
        "--check", action="store_true",
        help="validate the configuration (and that its database driver loads and its folders "
             "can be written), print it and exit")
    serve.add_argument("--host", type=host, metavar="HOST",
                       help="listen on this address instead of listen.host")
    serve.add_argument("--port", type=listen_port, metavar="PORT",
                       help="listen on this TCP port instead of listen.port (0: any free one)")
    serve.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    config = configured(args.config)
    if config is None:
        return EXIT_USAGE
    listen = config.listen
    config = dataclasses.replace(config, listen=dataclasses.replace(
        listen, host=listen.host if args.host is None else args.host,
        port=listen.port if args.port is None else args.port))
    from minipacs.app import preflight  # lazily: it loads the database driver

    try:
        preflight.check(config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if args.check:
        print(describe(config))
        return EXIT_OK
    setup_logging(config.logging.level)
    from minipacs.app import daemon as app

    return app.serve(config)


def describe(config: Config) -> str:
    """What `serve --check` prints: where the configuration came from and its main keys."""
    source = config.source if config.source is not None else "embedded defaults"
    lines = [
        f"config OK: {source}",
        f"ae_title: {config.ae_title}",
        f"listen: {config.listen.host}:{config.listen.port}",
        f"storage: {config.storage.root} (fsync {'on' if config.storage.fsync else 'off'})",
        f"database: {config.database.url}",
        f"peers: {', '.join(config.peers) or '(none)'}",
        f"security: unknown AEs {describe_operations(config.unknown_ae_operations())}, identity "
        f"{config.security.identity.value}, {len(config.security.users)} user(s), "
        f"HTTP without credentials {describe_operations(config.anonymous_http_operations())}",
        f"audit: {config.logging.audit or '(none)'}",
    ]
    return "\n".join(lines)

