"""Repeated failures from one address wait longer and longer, within bounds."""

from __future__ import annotations

from minipacs.security.throttle import FailureThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delays_double_up_to_the_cap() -> None:
    throttle = FailureThrottle(0.5, cap=3.0, clock=Clock())
    assert [throttle.failed("10.0.0.1") for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert throttle.failed("10.0.0.2") == 0.5  # per address


def test_success_and_time_forget() -> None:
    clock = Clock()
    throttle = FailureThrottle(1.0, forget_after=60.0, clock=clock)
    throttle.failed("a")
    throttle.failed("a")
    throttle.succeeded("a")
    assert throttle.failed("a") == 1.0
    clock.now += 61
    assert throttle.failed("a") == 1.0
    assert throttle.failed("a") == 2.0


def test_zero_base_disables_and_memory_is_bounded() -> None:
    throttle = FailureThrottle(0.0, max_addresses=3, clock=Clock())
    for address in range(10):
        assert throttle.failed(f"10.0.0.{address}") == 0.0
    assert len(throttle) == 3
    bounded = FailureThrottle(1.0, cap=30.0, clock=Clock())
    for _ in range(200):  # no overflow however long the streak
        delay = bounded.failed("x")
    assert delay == 30.0
