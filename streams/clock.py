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


class FeedClock:
    """The live clock of one events partition: the region's event-time watermark.

    Fed by the ``carebus.events.FeedWatermark`` records read on the partition
    (docs/architecture.md, "The live clock"): per (provider, ingest source), the
    latest event time that source had stored for the provider and the wall time it
    last stored one. A provider's watermark is the latest event time over its
    sources; it is idle when none of its sources stored anything for
    ``idle_micros`` of wall-clock time. :meth:`live` is the lowest watermark among
    the providers that are not idle, never later than the wall clock (``now``),
    the wall clock when every provider is idle, and never earlier than a clock it
    returned before.

    Pure: the caller passes the wall clock in. :meth:`to_dict` / :meth:`from_dict`
    carry it across restarts (the worker keeps it in its patient table).
    """

    def __init__(self, idle_micros: int) -> None:
        self.idle_micros = idle_micros
        #: (provider, source) -> [latest event time, latest last_received]
        self._sources: dict[tuple[str, str], list[int]] = {}
        #: the latest clock :meth:`live` returned (the clock never moves back)
        self.floor: int | None = None
        #: (now, clock) of the last :meth:`live` (the worker asks once per event)
        self._cached: tuple[int, int] | None = None

    def observe(self, provider: str, source: str, event_time: int, last_received: int) -> bool:
        """Take one watermark record in; True when it changed what is known."""
        self._cached = None
        held = self._sources.get((provider, source))
        if held is None:
            self._sources[(provider, source)] = [event_time, last_received]
            return True
        changed = False
        if event_time > held[0]:
            held[0], changed = event_time, True
        if last_received > held[1]:
            held[1], changed = last_received, True
        return changed

    def watermarks(self, now: int) -> dict[str, int]:
        """The watermark of every provider that is not idle at ``now``."""
        latest: dict[str, list[int]] = {}
        for (provider, _), (event_time, received) in self._sources.items():
            held = latest.get(provider)
            if held is None:
                latest[provider] = [event_time, received]
            else:
                held[0], held[1] = max(held[0], event_time), max(held[1], received)
        return {
            provider: event_time
            for provider, (event_time, received) in latest.items()
            if now - received < self.idle_micros
        }

    def live(self, now: int) -> int:
        """The partition's clock at wall time ``now`` (see the class docstring)."""
        cached = self._cached
        if cached is not None and cached[0] == now:
            return cached[1]
        clock = min([now, *self.watermarks(now).values()])
        if self.floor is not None and clock < self.floor:
            clock = self.floor
        self.floor = clock
        self._cached = (now, clock)
        return clock

    def holding(self, now: int) -> dict[str, int]:
        """Providers holding the clock behind the wall clock: how far (µs), each."""
        return {p: now - t for p, t in self.watermarks(now).items() if t < now}

    def to_dict(self) -> dict[str, object]:
        """Plain JSON types."""
        return {
            "v": 1,
            "f": self.floor,
            "s": [[p, s, t, r] for (p, s), (t, r) in sorted(self._sources.items())],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, object], idle_micros: int) -> FeedClock:
        """Inverse of :meth:`to_dict`; ``ValueError`` for an unknown format."""
        if raw.get("v") != 1:
            raise ValueError(f"unknown feed clock format {raw.get('v')!r}")
        clock = cls(idle_micros)
        floor = raw.get("f")
        clock.floor = None if floor is None else int(str(floor))
        for provider, source, event_time, received in raw.get("s") or ():  # type: ignore[attr-defined]
            clock._sources[(str(provider), str(source))] = [int(event_time), int(received)]
        return clock


class ClockWatch:
    """Which providers hold the clock back further than a threshold (pure).

    :meth:`check` takes how far each provider holds the clock behind the wall clock
    (µs) and returns the providers that newly passed ``threshold_micros`` and those
    that came back under it: each episode is reported once, not on every tick.
    """

    def __init__(self, threshold_micros: int) -> None:
        self.threshold_micros = threshold_micros
        self.flagged: set[str] = set()

    def check(self, behind: dict[str, int]) -> tuple[list[str], list[str]]:
        """(providers newly held back past the threshold, providers no longer)."""
        over = {p for p, micros in behind.items() if micros > self.threshold_micros}
        raised = sorted(over - self.flagged)
        cleared = sorted(self.flagged - over)
        self.flagged = over
        return raised, cleared
