"""The live worker's clocks: which patients' deadlines are due, without a scan.

A patient's pending deadlines live in their state (by event time). The worker keeps
a :class:`DeadlineIndex` beside its table: for every patient with a pending
deadline, the earliest one, in a heap per partition. When a partition's clock
moves (a later event, or a wall-clock tick) the worker asks the index which
patients are due and visits only those.

:class:`PartitionClocks` is the event clock of each partition: the latest event
time seen there, never ahead of the wall clock the worker passes in (an event
stamped in the future must not fire everyone's deadlines early).

Times are epoch microseconds, like :mod:`streams.deadlines`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

#: Rebuild a partition's heap when stale entries outnumber live ones by this factor.
_COMPACT_FACTOR = 2
_COMPACT_MIN = 64


class DeadlineIndex:
    """The earliest pending deadline of each patient, by partition."""

    def __init__(self) -> None:
        self._due: dict[int, dict[str, int]] = {}
        self._heaps: dict[int, list[tuple[int, str]]] = {}

    def schedule(self, partition: int, key: str, due: int | None) -> None:
        """Record that ``key``'s earliest deadline is ``due`` (None: no deadline)."""
        dues = self._due.setdefault(partition, {})
        if due is None:
            dues.pop(key, None)
            return
        if dues.get(key) == due:
            return
        dues[key] = due
        heap = self._heaps.setdefault(partition, [])
        heapq.heappush(heap, (due, key))
        if len(heap) > _COMPACT_MIN and len(heap) > _COMPACT_FACTOR * len(dues):
            self._heaps[partition] = [(d, k) for k, d in dues.items()]
            heapq.heapify(self._heaps[partition])

    def pop_due(self, partition: int, now: int) -> list[str]:
        """Patients of ``partition`` with a deadline at or before ``now``, earliest first.

        They leave the index; the caller fires their deadlines and :meth:`schedule`\\ s
        each patient's next one.
        """
        heap = self._heaps.get(partition)
        if not heap or heap[0][0] > now:
            return []
        dues = self._due[partition]
        keys: list[str] = []
        while heap and heap[0][0] <= now:
            due, key = heapq.heappop(heap)
            if dues.get(key) == due:
                del dues[key]
                keys.append(key)
        return keys

    def next_due(self, partition: int) -> int | None:
        """The earliest deadline in ``partition``, or None."""
        heap = self._heaps.get(partition)
        dues = self._due.get(partition, {})
        while heap and dues.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop everything known about ``partitions`` (revoked, or about to be rescanned)."""
        for partition in partitions:
            self._due.pop(partition, None)
            self._heaps.pop(partition, None)

    def partitions(self) -> set[int]:
        """The partitions with at least one patient indexed."""
        return {p for p, dues in self._due.items() if dues}

    def __len__(self) -> int:
        """How many patients have a pending deadline."""
        return sum(len(d) for d in self._due.values())


class PartitionClocks:
    """The event clock of each partition: the latest event time seen, capped at now."""

    def __init__(self) -> None:
        self._clocks: dict[int, int] = {}

    def advance(self, partition: int, event_time: int, now: int) -> int | None:
        """Move ``partition``'s clock to ``event_time`` (at most ``now``).

        Returns the new clock when it moved forward, else None.
        """
        moment = min(event_time, now)
        if moment <= self._clocks.get(partition, moment - 1):
            return None
        self._clocks[partition] = moment
        return moment

    def get(self, partition: int) -> int | None:
        """The clock of ``partition``, None before its first event."""
        return self._clocks.get(partition)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the clocks of ``partitions``."""
        for partition in partitions:
            self._clocks.pop(partition, None)
