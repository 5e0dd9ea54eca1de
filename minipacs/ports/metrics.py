"""Metrics port: what the network and the services report, for an adapter to count.

The DIMSE listener reports associations, the dispatcher each operation's command, status
and duration, the store each instance made durable. The Prometheus adapter lives in
``minipacs.web.metrics``; `NO_METRICS` is the default, so nothing depends on it.
"""

from __future__ import annotations

from typing import Final, Protocol


class Metrics(Protocol):
    """Counters the DIMSE side feeds; every method is cheap and never raises."""

    def association_started(self) -> None:
        """A TCP connection became a (candidate) association."""
        ...

    def association_ended(self, calling_ae: str, outcome: str, seconds: float) -> None:
        """An association ended: the caller's AE title ("-" if none) and how it went."""
        ...

    def dimse_operation(self, command: str, status: int, seconds: float) -> None:
        """One DIMSE operation answered: its command name and final status."""
        ...

    def instance_stored(self, size: int) -> None:
        """One instance made durable and indexed (`size` bytes of file)."""
        ...


class NoMetrics:
    """Counts nothing."""

    def association_started(self) -> None:
        pass

    def association_ended(self, calling_ae: str, outcome: str, seconds: float) -> None:
        pass

    def dimse_operation(self, command: str, status: int, seconds: float) -> None:
        pass

    def instance_stored(self, size: int) -> None:
        pass


NO_METRICS: Final[Metrics] = NoMetrics()
