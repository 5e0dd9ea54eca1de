"""Settling what a crash left between the store and the index (DESIGN principle 10).

Run before serving (``daemon.prepare``) and by ``db check --repair``; every step looks only
at records of unfinished work (spool entries, replaced files, delete journals), never at the
whole store, so a restart costs nothing in proportion to the archive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from ..index import maintenance
from ..storage import FilesystemStorage, inventory
from ..storage.spool import Recovered

__all__ = ["AfterCrash", "finish_interrupted_deletes", "recover"]

log = logging.getLogger("minipacs")


@dataclass(frozen=True, slots=True)
class AfterCrash:
    """What `recover` settled."""

    spool: Recovered
    replaced_files: int  # files of replaced instances deleted
    deleted_files: int  # files of interrupted `minipacs delete` runs removed


def recover(engine: Engine, storage: FilesystemStorage) -> AfterCrash:
    """Spool entries, replaced files and interrupted deletes, settled (blocking)."""
    spool = storage.recover(lambda keys: maintenance.referenced_keys(engine, keys))
    replaced = maintenance.settle_unreferenced(engine, storage.delete)
    deleted = finish_interrupted_deletes(engine, storage)
    if replaced or deleted:
        log.info("after a crash: %d replaced and %d deleted instance file(s) removed",
                 replaced, deleted)
    return AfterCrash(spool, replaced, deleted)


def finish_interrupted_deletes(engine: Engine, storage: FilesystemStorage) -> int:
    """Remove the files of journaled deletes that no row refers to; returns how many."""
    removed = 0
    for journal in inventory.claim_journals(storage.root):
        try:
            referenced = maintenance.instance_files_by_key(engine, journal.keys)
            for key in journal.keys:
                if key not in referenced and storage.path_of(key).exists():
                    storage.delete(key)
                    removed += 1
        except BaseException:
            inventory.release_journal(journal)
            raise
        inventory.remove_journal(journal)
    return removed
