"""scripts/soak: 64 concurrent associations mixing C-STORE, C-FIND, C-GET and C-MOVE against
one `minipacs serve` for 10 minutes; nothing may be lost and memory must stay flat.

Each worker keeps one association open for a few dozen operations, releases it and opens
the next, so 64 are open at any moment. C-MOVEs go to DCMTK's storescp (--fork); C-GETs
come back to the worker, which answers their C-STORE sub-operations. At the end every
acknowledged instance must be indexed and bit for bit what was sent, every retrieve must
have completed all its sub-operations, every moved instance must be at the destination, and
`minipacs db check` must be clean; the server's RSS and open files are sampled throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pydicom.dataset import Dataset

from minipacs.app import loop_factory
from minipacs.proto.command_codec import encode_command
from minipacs.proto.dimse import (
    CFindRQ,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CStoreRQ,
    DimseMessage,
)
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.pdu import AReleaseRQ, ContextResult, RoleSelection
from minipacs.proto.pdu_codec import encode_pdu
from minipacs.proto.sop import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    STUDY_ROOT_QR_FIND,
    STUDY_ROOT_QR_GET,
    STUDY_ROOT_QR_MOVE,
)
from minipacs.proto.status import Status
from tests.support import ServeProcess, storescp, write_config

from . import STARTUP_WAIT, corpus, memprobe, scratch
from .crash import compare, db_check
from .peer import RawPeer, Tally
from .procstat import Sampler, load_average, open_fds, peak_rss_kib, rss_by_mapping, rss_kib

LOOPBACK: Final = "127.0.0.1"
SERVER_AE: Final = "SOAK-SCP"
DESTINATION_AE: Final = "SOAKDEST"
WAIT: Final = 60.0  # for one answer, on a loaded machine
STUDIES: Final = 16
PER_ASSOCIATION: Final = (20, 60)  # operations on one association before it is released
OPERATIONS: Final = {"store": 8, "find": 4, "get": 2, "move": 2}
CONTEXTS: Final = [(abstract, [IMPLICIT_VR_LITTLE_ENDIAN]) for abstract in
                   (corpus.CT, STUDY_ROOT_QR_FIND, STUDY_ROOT_QR_GET, STUDY_ROOT_QR_MOVE)]


@dataclass
class Soak:
    """Everything the workers did and saw."""

    sent: dict[str, bytes] = field(default_factory=dict)  # SHA-256 of each data set sent
    acknowledged: set[str] = field(default_factory=set)
    series: dict[tuple[int, int], list[str]] = field(default_factory=lambda: defaultdict(list))
    moved: set[str] = field(default_factory=set)
    operations: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    sub_operations: Counter[str] = field(default_factory=Counter)
    associations: int = 0
    tally: Tally = field(default_factory=Tally)
    seeds: itertools.count[int] = field(default_factory=itertools.count)


class Worker:
    """One after another, associations of a few dozen mixed operations."""

    def __init__(self, number: int, port: int, soak: Soak, deadline: float) -> None:
        self.rng = random.Random(number)
        self.port = port
        self.soak = soak
        self.deadline = deadline
        self.contexts: dict[str, int] = {}
        self.ids = itertools.count(1)

    async def run(self) -> None:
        while time.monotonic() < self.deadline:
            await self.association()

    async def association(self) -> None:
        soak = self.soak
        rq = build_associate_rq("SOAK", SERVER_AE, CONTEXTS,
                                roles=[RoleSelection(corpus.CT, True, True)])
        async with RawPeer.connect(LOOPBACK, self.port, soak.tally) as peer:
            ac = await peer.associate(encode_pdu(rq), WAIT)
            if ac is None:
                soak.failures.append("association not accepted")
                return
            soak.associations += 1
            names = {2 * n + 1: abstract for n, (abstract, _) in enumerate(CONTEXTS)}
            self.contexts = {names[pc.context_id]: pc.context_id
                             for pc in ac.presentation_contexts
                             if pc.result == ContextResult.ACCEPTANCE}
            operations, weights = zip(*OPERATIONS.items(), strict=True)
            for _ in range(self.rng.randint(*PER_ASSOCIATION)):
                if time.monotonic() >= self.deadline or peer.closed:
                    break
                operation = self.rng.choices(operations, weights)[0]
                soak.operations[operation] += 1
                await getattr(self, operation)(peer)
            if not peer.closed:
                await peer.write(encode_pdu(AReleaseRQ()))
                await peer.read_pdu(WAIT)

    async def ask(self, peer: RawPeer, abstract: str, message: DimseMessage,
                  data: bytes | None) -> DimseMessage | None:
        await peer.send_message(self.contexts[abstract], encode_command(message), data)
        answer = await peer.responses(WAIT, type(message).__name__)
        if answer is None:
            self.soak.failures.append(f"{type(message).__name__}: no answer")
        return answer

    def message_id(self) -> int:
        return next(self.ids) & 0xFFFF or 1

    async def store(self, peer: RawPeer) -> None:
        soak, rng = self.soak, self.rng
        study = rng.randrange(STUDIES)
        seed = next(soak.seeds)
        ds = corpus.ct(seed, study=study, patient=study,
                       pixel_bytes=rng.choice((2, 8, 32)) * 1024)
        data = corpus.encode(ds, IMPLICIT_VR_LITTLE_ENDIAN)
        uid = str(ds.SOPInstanceUID)
        soak.sent[uid] = hashlib.sha256(data).digest()
        answer = await self.ask(peer, corpus.CT, CStoreRQ(
            message_id=self.message_id(), affected_sop_class_uid=corpus.CT,
            affected_sop_instance_uid=uid), data)
        if answer is not None and answer.status == Status.SUCCESS:  # type: ignore[union-attr]
            soak.acknowledged.add(uid)
            soak.series[(study, seed % 3)].append(uid)
        elif answer is not None:
            soak.failures.append(f"C-STORE: status {answer.status:#06x}")  # type: ignore[union-attr]

    async def find(self, peer: RawPeer) -> None:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        if self.rng.random() < 0.5:
            query.StudyInstanceUID = f"{corpus.UID_ROOT}.1.{self.rng.randrange(STUDIES)}"
        else:
            query.PatientName = "Fuzz^Patient1*"
        query.StudyDate = ""
        query.NumberOfStudyRelatedInstances = ""
        answer = await self.ask(peer, STUDY_ROOT_QR_FIND, CFindRQ(
            message_id=self.message_id(), affected_sop_class_uid=STUDY_ROOT_QR_FIND),
            corpus.encode(query, IMPLICIT_VR_LITTLE_ENDIAN))
        if answer is not None and answer.status != Status.SUCCESS:  # type: ignore[union-attr]
            self.soak.failures.append(f"C-FIND: status {answer.status:#06x}")  # type: ignore[union-attr]

    def selection(self) -> tuple[Dataset, list[str]] | None:
        """An IMAGE-level identifier naming 1-5 acknowledged instances of one series."""
        filled = [key for key, uids in self.soak.series.items() if uids]
        if not filled:
            return None
        study, series = self.rng.choice(filled)
        uids = self.rng.sample(self.soak.series[(study, series)],
                               min(5, len(self.soak.series[(study, series)])))
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.StudyInstanceUID = f"{corpus.UID_ROOT}.1.{study}"
        ds.SeriesInstanceUID = f"{corpus.UID_ROOT}.2.{study}.{series}"
        ds.SOPInstanceUID = uids
        return ds, uids

    async def retrieve(self, peer: RawPeer, abstract: str, message: DimseMessage,
                       identifier: Dataset, wanted: list[str]) -> bool:
        answer = await self.ask(peer, abstract, message,
                                corpus.encode(identifier, IMPLICIT_VR_LITTLE_ENDIAN))
        if not isinstance(answer, CGetRSP | CMoveRSP):
            return False
        completed = answer.number_of_completed_suboperations or 0
        failed = answer.number_of_failed_suboperations or 0
        self.soak.sub_operations["completed"] += completed
        self.soak.sub_operations["failed"] += failed
        if answer.status != Status.SUCCESS or completed != len(wanted) or failed:
            self.soak.failures.append(f"{type(message).__name__}: status {answer.status:#06x}"
                                      f", {completed} of {len(wanted)} completed")
            return False
        return True

    async def get(self, peer: RawPeer) -> None:
        chosen = self.selection()
        if chosen is not None:
            await self.retrieve(peer, STUDY_ROOT_QR_GET, CGetRQ(
                message_id=self.message_id(), affected_sop_class_uid=STUDY_ROOT_QR_GET),
                *chosen)

    async def move(self, peer: RawPeer) -> None:
        chosen = self.selection()
        if chosen is not None and await self.retrieve(peer, STUDY_ROOT_QR_MOVE, CMoveRQ(
                message_id=self.message_id(), affected_sop_class_uid=STUDY_ROOT_QR_MOVE,
                move_destination=DESTINATION_AE), *chosen):
            self.soak.moved.update(chosen[1])


def received(folder: Path) -> set[str]:
    """SOP Instance UIDs storescp wrote (its file names: modality prefix, then the UID)."""
    return {path.name.split(".", 1)[1] for path in folder.iterdir() if "." in path.name}


async def run(folder: Path, seconds: float, workers: int, heap_every: float) -> int:
    async with storescp(folder, "--fork") as destination:
        config = write_config(
            folder, ae_title=SERVER_AE, storage={"fsync": False, "min_free_mb": 0},
            retrieve={"max_associations_per_peer": 8},
            peers={DESTINATION_AE: {"host": LOOPBACK, "port": destination.port}})
        command = memprobe.command(folder / "heap", heap_every, False) if heap_every else None
        served = ServeProcess(config, command=command)
        try:
            await asyncio.to_thread(served.start, STARTUP_WAIT)
            return await _soak(folder, config, served, destination.directory, seconds,
                               workers)
        finally:
            await asyncio.to_thread(served.stop)
            (folder / "server.log").write_text(served.log + "\n", errors="replace")


async def _soak(folder: Path, config: Path, served: ServeProcess, received_dir: Path,
                seconds: float, workers: int) -> int:
    pid = served.proc.pid
    sampler = Sampler(pid, interval=5.0).start()
    load_before = load_average()
    soak = Soak()
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    await asyncio.gather(*(Worker(n, served.port, soak, deadline).run()
                           for n in range(workers)))
    elapsed = time.monotonic() - started
    sampler.stop()
    end = (rss_kib(pid), open_fds(pid), peak_rss_kib(pid), rss_by_mapping(pid))
    served.signal(signal.SIGTERM)
    code = await asyncio.to_thread(served.wait, 60)
    lost, corrupt, kept = compare(folder, soak.sent, soak.acknowledged)
    check_code, check_line = db_check(config)
    missing_moved = soak.moved - received(received_dir)
    first, last = sampler.samples[0], sampler.samples[-1]
    third = sampler.samples[len(sampler.samples) // 3]
    print(f"soak: {workers} concurrent associations for {elapsed:.0f} s, "
          f"{soak.associations} associations, operations {dict(soak.operations)}, "
          f"load average before {load_before}, after {load_average()}")
    print(f"  stores acknowledged {len(soak.acknowledged)}, lost {len(lost)}, indexed but not "
          f"as sent {len(corrupt)}, stored without an answer {kept}; retrieve sub-operations "
          f"{dict(soak.sub_operations)}; moved instances missing at the destination "
          f"{len(missing_moved)}; failures {len(soak.failures)}")
    print(f"  server RSS {first[1] / 1024:.1f} MiB at start, {third[1] / 1024:.1f} MiB at "
          f"{third[0]:.0f} s, {last[1] / 1024:.1f} MiB at the end (peak "
          f"{end[2] / 1024:.1f} MiB); open fds {first[2]} -> {last[2]} "
          f"({end[1]} after the associations closed)")
    print(sampler.curve(10))
    print("  RSS by mapping at the end: " + ", ".join(f"{name} {kib / 1024:.1f} MiB"
                                                   for name, kib in end[3]))
    print(f"  db check: {check_line!r} (exit {check_code}); server exit {code}")
    for headline in memprobe.first_and_last(folder / "heap"):
        print(f"  heap {headline}")
    for failure, count in Counter(soak.failures).most_common(10):
        print(f"  FAILURE x{count}: {failure}")
    bad = lost or corrupt or missing_moved or soak.failures or check_code or code
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="duration (default 600)")
    parser.add_argument("--workers", type=int, default=64,
                        help="concurrent associations (default 64)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the data and the server log in DIR")
    parser.add_argument("--heap", type=float, default=0.0, metavar="SECONDS",
                        help="every SECONDS, write the server's malloc figures and the object "
                             "counts that grew into heap/ of its folder (as scripts/fuzz)")
    args = parser.parse_args(argv)
    with scratch(args.keep, "soak-") as folder, \
            asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(run(folder, args.seconds, args.workers, args.heap))


if __name__ == "__main__":
    sys.exit(main())
