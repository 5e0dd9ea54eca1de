"""Slowing down repeated authentication failures from one address (bounded everywhere).

The n-th consecutive failure from an address waits `base` * 2^(n-1) seconds, at most
`cap`, before it is answered (A-ASSOCIATE-RJ, HTTP 401); a success or `forget_after`
seconds without a failure start the count again. At most `max_addresses` addresses are
remembered (the least recently failed are forgotten first), so memory stays bounded
whatever the number of attackers. The wait holds only the failing connection.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

__all__ = ["FailureThrottle"]

DEFAULT_CAP: Final = 30.0
DEFAULT_FORGET_AFTER: Final = 900.0
DEFAULT_MAX_ADDRESSES: Final = 10_000
_MAX_DOUBLINGS: Final = 32  # 2^32 * any sane base is past every cap


class FailureThrottle:
    """Counts failures per address; `failed()` returns how long to hold the answer."""

    def __init__(self, base: float, *, cap: float = DEFAULT_CAP,
                 forget_after: float = DEFAULT_FORGET_AFTER,
                 max_addresses: int = DEFAULT_MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base = base
        self.cap = cap
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # count, last

    def failed(self, address: str) -> float:
        """Record a failure from `address`; the seconds to wait before answering it."""
        now = self.clock()
        count, last = self._failures.pop(address, (0, now))
        if now - last > self.forget_after:
            count = 0
        count += 1
        self._failures[address] = (count, now)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        if self.base <= 0:
            return 0.0
        return min(self.cap, self.base * 2 ** min(count - 1, _MAX_DOUBLINGS))

    def succeeded(self, address: str) -> None:
        """A success from `address`: its count starts again."""
        self._failures.pop(address, None)

    def __len__(self) -> int:
        return len(self._failures)
