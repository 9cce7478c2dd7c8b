"""What the worker reports about itself, as a protocol ``streams`` can depend on.

``carebus.metrics.Metrics`` implements it; the worker command passes one in.
:class:`NullSensors` is the default, for tests and embedding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class WorkerSensors(Protocol):
    """The worker's metrics hooks (label values are folded by the implementation)."""

    def event_processed(self, event_type: str) -> None:
        """The worker applied one event of this short schema name."""

    def alert_raised(self, rule: str) -> None:
        """The worker published one alert of this rule."""

    def alert_recipient_unknown(self, rule: str) -> None:
        """An alert of this rule named a recipient outside the region config (no copy)."""

    def engine_error(self, stage: str, rule: str | None) -> None:
        """The rule engine raised on an event or a deadline (``stage``); ``rule`` if known."""

    def set_deadlines_pending(self, count: int) -> None:
        """Patients with a pending deadline in this worker."""

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        """Records between the worker's position and the end of a partition."""

    def set_clock_behind(self, behind: Mapping[str, float]) -> None:
        """The providers holding the worker's live clock behind the wall clock now, and
        how far (seconds): every provider not in ``behind`` holds nothing back."""


class NullSensors:
    """Reports nothing."""

    def event_processed(self, event_type: str) -> None:
        """Ignore."""

    def alert_raised(self, rule: str) -> None:
        """Ignore."""

    def alert_recipient_unknown(self, rule: str) -> None:
        """Ignore."""

    def engine_error(self, stage: str, rule: str | None) -> None:
        """Ignore."""

    def set_deadlines_pending(self, count: int) -> None:
        """Ignore."""

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        """Ignore."""

    def set_clock_behind(self, behind: Mapping[str, float]) -> None:
        """Ignore."""
