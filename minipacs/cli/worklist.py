"""`minipacs worklist add|list|remove`: the Modality Worklist's scheduled procedure steps.

Exit codes: 0 success, 1 the operation failed (no index database, an unknown step ID:
nothing removed), 2 usage or configuration error (a bad file: nothing added).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Final

from minipacs.config import Config

from .common import EXIT_OK, Commands, add_config_option, run_configured, table

if TYPE_CHECKING:
    from minipacs.app.worklist import StepSummary

__all__ = ["add_commands"]

_COLUMNS: Final = ("ID", "DATE", "TIME", "MODALITY", "STATION", "PATIENT", "ACCESSION",
                   "STATUS")


def _step_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a step ID: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a step ID: {text!r}")
    return value


def add_commands(commands: Commands) -> None:
    """Add `worklist add|list|remove` to the `minipacs` parser."""
    worklist = commands.add_parser(
        "worklist", help="Modality Worklist: add, list and remove scheduled procedure steps")
    actions = worklist.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add", help="add worklist items from DICOM JSON (one object or a list) or .wl files")
    add.add_argument("files", metavar="FILE", nargs="+", type=Path,
                     help="a DICOM JSON file (PS3.18 F) or a Part 10 file of one item")
    add.set_defaults(handler=_cmd_add)
    listing = actions.add_parser("list", help="list the stored steps, one line each")
    listing.add_argument("--json", action="store_true", help="one JSON object per step")
    listing.set_defaults(handler=_cmd_list)
    remove = actions.add_parser("remove", help="remove steps by the ID `worklist list` shows")
    remove.add_argument("ids", metavar="ID", nargs="+", type=_step_id, help="a step ID")
    remove.set_defaults(handler=_cmd_remove)
    add_config_option(add, listing, remove)


def _cmd_add(args: argparse.Namespace) -> int:
    def run(config: Config) -> int:
        from minipacs.app import worklist as app

        for added in app.add(config, args.files):
            ids = ", ".join(map(str, added.ids))
            noun = "step" if len(added.ids) == 1 else "steps"
            print(f"{added.path}: added {len(added.ids)} {noun} (ID {ids})")
        return EXIT_OK

    return run_configured("worklist add", args.config, run)


def _row(step: StepSummary) -> tuple[str, ...]:
    patient = f"{step.patient_name} ({step.patient_id})" if step.patient_id else step.patient_name
    return (str(step.id), step.start_date, step.start_time, step.modality, step.station_ae,
            patient, step.accession_number, step.status)


def _cmd_list(args: argparse.Namespace) -> int:
    def run(config: Config) -> int:
        from minipacs.app import worklist as app

        steps = app.list_steps(config)
        if args.json:
            for step in steps:
                print(json.dumps(asdict(step), ensure_ascii=False))
            return EXIT_OK
        for line in table([_COLUMNS, *(_row(step) for step in steps)]):
            print(line)
        return EXIT_OK

    return run_configured("worklist list", args.config, run)


def _cmd_remove(args: argparse.Namespace) -> int:
    def run(config: Config) -> int:
        from minipacs.app import worklist as app

        removed = app.remove(config, args.ids)
        print(f"removed {removed} step{'' if removed == 1 else 's'}")
        return EXIT_OK

    return run_configured("worklist remove", args.config, run)
