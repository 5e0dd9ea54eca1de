"""`minipacs user add NAME --config FILE`: a user's passcode, hashed, into the configuration.

The passcode is read from standard input when it is not a terminal (one line), else asked
for twice without echo. It is never an argument (it would show in `ps` and shell history).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from minipacs.config import ConfigError, check_user_name

from .common import EXIT_OK, EXIT_USAGE, Commands, from_checker

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """Add `user add` to the `minipacs` parser."""
    user = commands.add_parser("user", help="users of DICOM user identity and HTTP Basic")
    actions = user.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add", help="hash a passcode (stdin, or asked twice) into security.users.NAME")
    add.add_argument("name", metavar="NAME", type=from_checker(check_user_name),
                     help="the user name (1-64 letters, digits and . _ @ -)")
    add.add_argument("--config", metavar="FILE", type=Path,
                     help="the configuration file to write the hash into (its comments are "
                          "kept); without it, the line to paste is printed")
    add.set_defaults(handler=_cmd_user_add)


def _passcode(name: str) -> str | None:
    """One line of stdin, or twice from the terminal; None (after a message) when unusable."""
    if not sys.stdin.isatty():
        passcode = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        passcode = getpass.getpass(f"passcode for {name}: ")
        if getpass.getpass("again: ") != passcode:
            print("minipacs user add: the two passcodes differ", file=sys.stderr)
            return None
    if not passcode:
        print("minipacs user add: empty passcode", file=sys.stderr)
        return None
    return passcode


def _cmd_user_add(args: argparse.Namespace) -> int:
    from minipacs.app.users import add_user, entry_line

    passcode = _passcode(args.name)
    if passcode is None:
        return EXIT_USAGE
    if args.config is None:
        from minipacs.app.users import hash_password

        print(entry_line(args.name, hash_password(passcode)))
        return EXIT_OK
    try:
        added = add_user(args.config, args.name, passcode)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if not added.written:
        print(f"minipacs user add: {args.config} left as it was ({added.reason}); add this "
              "line under security.users:", file=sys.stderr)
        print(added.line)
        return EXIT_OK
    verb = "changed the passcode of" if added.replaced else "added"
    print(f"{verb} user {args.name!r} in {args.config} (restart minipacs to apply)",
          file=sys.stderr)
    return EXIT_OK
