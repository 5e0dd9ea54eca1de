"""Crash consistency: `minipacs serve` killed with SIGKILL at random moments during
concurrent ingest, restarted, and checked (tests/interop/test_crash_consistency.py in CI,
scripts/crash for a hundred kills and more).

Each round starts the server (its recovery runs before it listens), opens several storing
associations, and kills it once a random number of instances has been acknowledged — while
the other associations are anywhere in their own C-STOREs — or, in the large rounds, once a
client is half-way through sending a large instance. At the end the server is restarted and
stopped cleanly, and every acknowledged instance must be indexed, its file holding the data
set bit for bit; every indexed instance must hold exactly what was sent for it; the spool
must be empty and `minipacs db check` clean (no orphan file, no row without its file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from minipacs.app import loop_factory
from minipacs.net.client import association
from minipacs.ports import AssociationClosed, PeerUnreachable
from minipacs.proto.dimse import CStoreRQ
from minipacs.proto.negotiation import build_associate_rq
from minipacs.proto.sop import IMPLICIT_VR_LITTLE_ENDIAN
from minipacs.proto.status import Status
from tests.interop.storecheck import index_rows
from tests.support import ServeProcess, minipacs_env, write_config

from . import STARTUP_WAIT, corpus, scratch
from .procstat import load_average

LOOPBACK: Final = "127.0.0.1"
SERVER_AE: Final = "CRASHME"
WAIT: Final = 30.0  # for anything that should happen promptly (a loaded CI machine)
FRAGMENT: Final = 64 * 1024  # a large instance goes out in pieces of this size
RECOVERED: Final = re.compile(r"spool recovered: (\d+) unfinished, (\d+) finished, "
                              r"(\d+) orphan file")
POLL: Final = 0.005  # seconds between looks at the spool folder


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged, by SOP Instance UID."""

    sent: dict[str, bytes] = field(default_factory=dict)  # SHA-256 of the data set sent
    acknowledged: set[str] = field(default_factory=set)
    refused: int = 0  # answered with a failure status (none is expected)
    acks_this_round: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """The figures of a campaign."""

    kills: int
    large_kills: int
    acknowledged: int
    lost: tuple[str, ...]  # acknowledged, but missing or not bit for bit
    corrupt: tuple[str, ...]  # indexed, but not what was sent for it
    unacknowledged_kept: int  # committed just before a kill, its answer never received
    refused: int
    db_check: str  # the first line of `minipacs db check`
    db_check_code: int
    spool_left: int
    recovered: tuple[int, int, int]  # what restarts settled: unfinished, finished, orphans
    seconds: float

    @property
    def clean(self) -> bool:
        return not (self.lost or self.corrupt or self.refused or self.spool_left
                    or self.db_check_code)


def instance(ledger: Ledger, uid_seed: int, pixel_bytes: int) -> tuple[str, bytes]:
    """A CT data set with a unique SOP Instance UID, as Implicit VR Little Endian bytes."""
    ds = corpus.ct(uid_seed, study=uid_seed % 7, patient=uid_seed % 7, pixel_bytes=pixel_bytes)
    data = corpus.encode(ds, IMPLICIT_VR_LITTLE_ENDIAN)
    uid = str(ds.SOPInstanceUID)
    ledger.sent[uid] = hashlib.sha256(data).digest()
    return uid, data


async def _halves(data: bytes, halfway: asyncio.Event) -> AsyncIterator[bytes]:
    """`data` in FRAGMENT pieces; after half of it, say so and send nothing more."""
    cut = len(data) // 2
    for start in range(0, cut, FRAGMENT):
        yield data[start:min(start + FRAGMENT, cut)]
    halfway.set()
    await asyncio.Future()  # until the kill ends the association (cancelled then)


async def client(port: int, number: int, round_: int, ledger: Ledger, rng: random.Random,
                 enough: asyncio.Event, target: int, halfway: asyncio.Event | None,
                 large_bytes: int) -> None:
    """Store instances on one association until the kill ends it."""
    rq = build_associate_rq(f"CRASH{number}", SERVER_AE, [(corpus.CT,
                                                           [IMPLICIT_VR_LITTLE_ENDIAN])])
    sequence = 0
    with contextlib.suppress(AssociationClosed, PeerUnreachable, ConnectionError, OSError):
        async with association(LOOPBACK, port, rq, connect_timeout=WAIT,
                               artim_timeout=WAIT) as conn:
            (context,) = conn.info.negotiated.contexts.values()
            while True:
                sequence += 1
                seed = (round_ * 100 + number) * 100_000 + sequence
                large = halfway is not None and sequence == 2
                uid, data = instance(ledger, seed, large_bytes if large else
                                     rng.choice((2, 8, 32, 96)) * 1024)
                message = CStoreRQ(message_id=conn.next_message_id(),
                                   affected_sop_class_uid=corpus.CT,
                                   affected_sop_instance_uid=uid)
                payload = _halves(data, halfway) if large and halfway else data
                replies = [reply async for reply in conn.request(context.context_id, message,
                                                                 payload)]
                if replies and replies[-1].message.status == Status.SUCCESS:
                    ledger.acknowledged.add(uid)
                    ledger.acks_this_round += 1
                    if ledger.acks_this_round >= target:
                        enough.set()
                else:
                    ledger.refused += 1


async def _spooled(spool: Path, size: int) -> None:
    """Until a spool entry of the server holds at least `size` bytes (a bounded wait on
    what the server has written: the client's half may still sit in socket buffers)."""
    while not any(entry.stat().st_size >= size for entry in spool.iterdir()):
        await asyncio.sleep(POLL)


def _start(config: Path) -> ServeProcess:
    served = ServeProcess(config)
    try:
        return served.start(STARTUP_WAIT)
    except BaseException:
        served.stop()
        raise


async def one_round(config: Path, round_: int, ledger: Ledger, rng: random.Random, *,
                    clients: int, large_bytes: int | None, logs: Path) -> None:
    """Start the server, store from `clients` associations, SIGKILL it at a random moment."""
    served = await asyncio.to_thread(_start, config)
    try:
        ledger.acks_this_round = 0
        enough = asyncio.Event()
        halfway = asyncio.Event() if large_bytes else None
        target = rng.randint(1, 4 * clients)  # the kill comes after this many answers
        tasks = [asyncio.create_task(client(served.port, n, round_, ledger, rng, enough,
                                            target, halfway if n == 0 else None,
                                            large_bytes or 0))
                 for n in range(clients)]
        try:
            async with asyncio.timeout(WAIT):
                await (halfway or enough).wait()
                if large_bytes:  # the server is mid-way too: its spool holds part of it
                    await _spooled(config.parent / "store" / ".spool", large_bytes // 4)
        except TimeoutError:
            raise AssertionError(f"round {round_}: no kill moment within {WAIT:g} s (acks "
                                 f"{ledger.acks_this_round}); log:\n{served.log}") from None
        served.signal(signal.SIGKILL)
        await asyncio.to_thread(served.proc.wait, WAIT)
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):  # a client's own bug, not the kill
                raise result
    finally:
        await asyncio.to_thread(served.stop)
        (logs / f"round-{round_:04d}.log").write_text(served.log + "\n", errors="replace")


def _restart_and_stop(config: Path, logs: Path) -> None:
    """Start once more (recovery runs first), then stop cleanly with SIGTERM."""
    served = _start(config)
    try:
        served.signal(signal.SIGTERM)
        code = served.wait(WAIT)
        if code != 0:
            raise AssertionError(f"minipacs serve exited with {code}:\n{served.log}")
    finally:
        served.stop()
        (logs / "final.log").write_text(served.log + "\n", errors="replace")


def compare(folder: Path, sent: dict[str, bytes], acknowledged: set[str]
            ) -> tuple[list[str], list[str], int]:
    """(lost, corrupt, kept unacknowledged): acknowledged instances missing from the index or
    not bit for bit what was sent (`sent`: SHA-256 of each data set), indexed ones not as
    sent, and how many were indexed though their answer never came."""
    root, rows = folder / "store", index_rows(folder / "index.db")
    lost: list[str] = []
    corrupt: list[str] = []
    for uid, row in rows.items():
        data = (root / row.storage_key).read_bytes()
        intact = (sent.get(uid) == hashlib.sha256(data[row.dataset_offset:]).digest()
                  and row.checksum == f"sha256:{hashlib.sha256(data).hexdigest()}")
        if not intact:
            (lost if uid in acknowledged else corrupt).append(uid)
    lost += sorted(acknowledged - rows.keys())
    return lost, corrupt, len(rows.keys() - acknowledged)


def db_check(config: Path) -> tuple[int, str]:
    """`minipacs db check`: its exit code and first line."""
    result = subprocess.run([sys.executable, "-m", "minipacs", "db", "check", "--config",
                             str(config)], capture_output=True, text=True, timeout=WAIT * 4,
                            env=minipacs_env(), stdin=subprocess.DEVNULL, check=False)
    lines = (result.stdout + result.stderr).strip().splitlines()
    return result.returncode, lines[0] if lines else ""


def check(folder: Path, config: Path, ledger: Ledger, kills: int, large_kills: int,
          seconds: float) -> Outcome:
    """Compare what was acknowledged with the index and the files; run `db check`."""
    lost, corrupt, kept = compare(folder, ledger.sent, ledger.acknowledged)
    code, first_line = db_check(config)
    spool = folder / "store" / ".spool"
    return Outcome(
        kills=kills, large_kills=large_kills, acknowledged=len(ledger.acknowledged),
        lost=tuple(lost), corrupt=tuple(corrupt), unacknowledged_kept=kept,
        refused=ledger.refused, db_check=first_line, db_check_code=code,
        spool_left=len(list(spool.iterdir())) if spool.exists() else 0,
        recovered=_recoveries(folder / "logs"), seconds=seconds)


def _recoveries(logs: Path) -> tuple[int, int, int]:
    """Sum of what the restarts' spool recovery settled (its "spool recovered" lines)."""
    totals = [0, 0, 0]
    for path in logs.glob("*.log"):
        for match in RECOVERED.finditer(path.read_text(errors="replace")):
            for n in range(3):
                totals[n] += int(match[n + 1])
    return totals[0], totals[1], totals[2]


def campaign(folder: Path, *, kills: int, large_kills: int, clients: int, seed: str,
             large_bytes: int, fsync: bool = False) -> Outcome:
    """`kills` rounds, `large_kills` of them killed half-way through a large instance."""
    config = write_config(folder, ae_title=SERVER_AE,
                          storage={"fsync": fsync, "min_free_mb": 0},
                          limits={"shutdown_grace": 5})
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    rng = random.Random(seed)
    large_rounds = set(rng.sample(range(kills), min(large_kills, kills)))
    ledger = Ledger()
    started = time.monotonic()

    async def rounds() -> None:
        for number in range(kills):
            await one_round(config, number, ledger, rng, clients=clients,
                            large_bytes=large_bytes if number in large_rounds else None,
                            logs=logs)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(rounds())
    _restart_and_stop(config, logs)
    return check(folder, config, ledger, kills, len(large_rounds), time.monotonic() - started)


def report(outcome: Outcome) -> str:
    return (f"{outcome.kills} SIGKILLs ({outcome.large_kills} half-way through a large "
            f"instance) in {outcome.seconds:.0f} s: {outcome.acknowledged} instances "
            f"acknowledged, lost {len(outcome.lost)}, indexed but not as sent "
            f"{len(outcome.corrupt)}, stored though never acknowledged (committed just "
            f"before a kill) {outcome.unacknowledged_kept}, refused {outcome.refused}; the "
            f"restarts' recovery settled {outcome.recovered[0]} unfinished spool entries, "
            f"{outcome.recovered[1]} committed ones and removed {outcome.recovered[2]} files "
            f"linked but never indexed; after the last restart: spool entries left "
            f"{outcome.spool_left}, db check {outcome.db_check!r} (exit "
            f"{outcome.db_check_code}); load average {load_average()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/crash", description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs (default 100)")
    parser.add_argument("--large", type=int, default=5,
                        help="of which half-way through a large instance (default 5)")
    parser.add_argument("--large-mb", type=int, default=32,
                        help="size of the large instance in MiB (default 32)")
    parser.add_argument("--clients", type=int, default=8,
                        help="concurrent storing associations (default 8)")
    parser.add_argument("--fsync", action="store_true",
                        help="storage.fsync: true (a process kill needs no fsync to keep "
                             "what was written; a power loss would)")
    parser.add_argument("--seed", default=str(time.time_ns()), help="campaign seed")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the data and every round's server log in DIR")
    args = parser.parse_args(argv)
    with scratch(args.keep, "crash-") as folder:
        outcome = campaign(folder, kills=args.kills, large_kills=args.large,
                           clients=args.clients, seed=args.seed,
                           large_bytes=args.large_mb << 20, fsync=args.fsync)
        print(f"seed {args.seed!r}: {report(outcome)}")
        for uid in outcome.lost[:10]:
            print(f"  LOST {uid}")
        for uid in outcome.corrupt[:10]:
            print(f"  NOT AS SENT {uid}")
    return 0 if outcome.clean else 1


if __name__ == "__main__":
    sys.exit(main())
