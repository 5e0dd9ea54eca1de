"""Crash consistency in CI: `minipacs serve` SIGKILLed at random moments during concurrent
ingest from four associations (once half-way through an 8 MiB instance), restarted, checked.

Every acknowledged instance must be indexed and bit for bit what was sent, every indexed one
what was sent for it, the spool empty and `minipacs db check` clean. The random moments come
from a fresh seed each run (printed on failure); scripts/crash runs the same with a hundred
kills. tests/reliability/crash.py holds the campaign.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.reliability.crash import campaign, report


def test_acknowledged_instances_survive_sigkills_and_nothing_is_left_over(
        tmp_path: Path) -> None:
    seed = str(time.time_ns())
    outcome = campaign(tmp_path, kills=4, large_kills=1, clients=4, seed=seed,
                       large_bytes=8 << 20)
    summary = f"seed {seed!r}: {report(outcome)}"
    assert outcome.kills == 4 and outcome.large_kills == 1, summary
    assert outcome.acknowledged > 0, summary
    assert not outcome.lost, f"{summary}; lost {outcome.lost[:5]}"
    assert not outcome.corrupt, f"{summary}; not as sent {outcome.corrupt[:5]}"
    assert outcome.refused == 0, summary
    assert outcome.spool_left == 0, summary
    assert outcome.db_check_code == 0 and "no problems" in outcome.db_check, summary
    assert outcome.recovered[0] >= 1, summary  # the large instance's spool entry, settled
