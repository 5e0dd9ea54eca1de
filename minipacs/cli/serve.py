"""`minipacs serve`: run the DICOM server in the foreground, or check its configuration."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from minipacs.config import Config, ConfigError, ListenConfig, describe_operations

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
                       help="listen on this address instead of listen.host (listen_tls.host "
                            "when only listen_tls is configured)")
    serve.add_argument("--port", type=listen_port, metavar="PORT",
                       help="listen on this TCP port instead of listen.port (listen_tls.port "
                            "when only listen_tls is configured; 0: any free one)")
    serve.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    config = configured(args.config)
    if config is None:
        return EXIT_USAGE
    # The options move the plain listener, or the TLS one on a TLS-only server.
    key = "listen" if config.listen is not None else "listen_tls"
    listen = getattr(config, key)
    assert listen is not None  # the configuration has at least one listener
    config = dataclasses.replace(config, **{key: dataclasses.replace(
        listen, host=listen.host if args.host is None else args.host,
        port=listen.port if args.port is None else args.port)})
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
    peers = ", ".join(_peer(title, peer.tls) for title, peer in config.peers.items())
    lines = [
        f"config OK: {source}",
        f"ae_title: {config.ae_title}",
        f"listen: {_address(config.listen)}",
        f"listen_tls: {_address(config.listen_tls)}",
        f"storage: {config.storage.root} (fsync {'on' if config.storage.fsync else 'off'})",
        f"database: {config.database.url}",
        f"peers: {peers or '(none)'}",
        f"security: unknown AEs {describe_operations(config.unknown_ae_operations())}, identity "
        f"{config.security.identity.value}, {len(config.security.users)} user(s), "
        f"HTTP without credentials {describe_operations(config.anonymous_http_operations())}",
        f"audit: {config.logging.audit or '(none)'}",
    ]
    if config.tls is not None:
        tls = config.tls
        lines.append(f"tls: certificate {tls.certificate}, peer certificates "
                     f"{tls.peer_certificate} (CA {tls.ca_certificates})")
    if config.http is not None:
        lines.append(f"http: {config.http.host}:{config.http.port}"
                     f"{' (HTTPS)' if config.http.tls else ''}")
    return "\n".join(lines)


def _address(listen: ListenConfig | None) -> str:
    return "(none)" if listen is None else f"{listen.host}:{listen.port}"


def _peer(title: str, tls: bool) -> str:
    return f"{title} (TLS)" if tls else title
