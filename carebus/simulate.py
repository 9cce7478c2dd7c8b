"""Offline replay: HL7 v2 feeds through the translator and the rules, alerts out.

The rules spec's ``carebus simulate``: every message of every feed, in order, is
parsed (:mod:`connectors.hl7`), translated (:mod:`connectors.translate`) and run
through the rule engine (:mod:`streams.engine`), one :class:`PatientState` per
patient key. The clock is the latest event time seen so far: before a message is
applied, every deadline (of any patient) due strictly before that clock fires, in
time order. At the end the clock moves to ``until`` (default: the latest event
time) and every deadline at or before it fires. ``ADT^A40`` merges move the
retired key's state into the survivor, and later events still carrying the
retired key are routed to the survivor.

Messages that cannot be used are reported, by feed and position with the reason
and never with patient data, and the run goes on.
"""

from __future__ import annotations

import gc
import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from carebus.errors import MessageRejected
from connectors.hl7.framing import iter_feed
from connectors.hl7.parse import parse_message
from connectors.translate import translate
from streams.alert import Alert
from streams.deadlines import to_micros
from streams.engine import Engine
from streams.region import Region
from streams.state import PatientState
from streams.view import MERGED, EventLike, EventView


@contextmanager
def batch_gc(threshold: int = 50_000) -> Iterator[None]:
    """Run the cycle collector rarely while replaying, and restore it afterwards.

    A replay allocates millions of short-lived, acyclic objects that reference
    counting frees; collecting cycles every 700 allocations is wasted work.
    """
    previous = gc.get_threshold()
    gc.set_threshold(threshold, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message of a feed that could not be used (no patient data in it)."""

    feed: str
    position: int
    reason: str
    detail: str
    control_id: str | None = None

    def line(self) -> str:
        """``FEED:POSITION: REASON (control id ID): DETAIL``."""
        control = f" (control id {self.control_id})" if self.control_id else ""
        return f"{self.feed}:{self.position}: {self.reason}{control}: {self.detail}"


@dataclass
class Stats:
    """Counts of one run."""

    messages: int = 0
    events: int = 0
    rejected: int = 0
    alerts: int = 0
    patients: int = 0


class Simulation:
    """The rule engine over many patients with one event-time clock."""

    def __init__(self, region: Region) -> None:
        self.engine = Engine(region)
        self.states: dict[str, PatientState] = {}
        #: retired patient key -> the key that took it over (A40)
        self.aliases: dict[str, str] = {}
        #: the latest event time seen (epoch microseconds), None before the first
        self.clock: int | None = None
        self._wakeups: list[tuple[int, int, str]] = []
        self._wake_at: dict[str, int] = {}
        self._seq = 0

    def message(self, events: Sequence[EventLike]) -> list[Alert]:
        """Apply the events of one message; return the alerts raised, in order."""
        if len(events) == 1:  # most messages: no list of views, no max()
            event = events[0]
            views: Sequence[EventView] = (EventView(event.schema, event.record),)
            latest = views[0].time
        elif events:
            views = [EventView(e.schema, e.record) for e in events]
            latest = max(v.time for v in views)
        else:
            return []
        clock = self.clock
        if clock is None or latest > clock:
            clock = self.clock = latest
        wakeups = self._wakeups
        alerts = self._fire(clock, inclusive=False) if wakeups and wakeups[0][0] < clock else []
        for view in views:
            raised = self._apply(view)
            if raised:
                alerts.extend(raised)
        return alerts

    def finish(self, until: datetime | None = None) -> list[Alert]:
        """Move the clock to ``until`` (default: the latest event time); fire what is due."""
        if until is not None:
            end = to_micros(until)
        elif self.clock is not None:
            end = self.clock
        else:
            return []
        alerts = self._fire(end, inclusive=True)
        self.clock = end if self.clock is None else max(self.clock, end)
        return alerts

    def resolve(self, key: str) -> str:
        """The key that owns ``key``'s state now (itself unless merged away)."""
        aliases = self.aliases
        while key in aliases:
            key = aliases[key]
        return key

    # -- internals -----------------------------------------------------------------

    def _apply(self, view: EventView) -> list[Alert]:
        key = view.patient_key
        if key in self.aliases:
            key = self.resolve(key)
        if view.schema == MERGED:
            self._merge(key, self.resolve(str(view.record["retired_key"])))
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = PatientState(key)
        alerts = self.engine.process_view(state, view)
        if state.deadlines or key in self._wake_at:
            self._schedule(key, state)
        return alerts

    def _merge(self, survivor: str, retired: str) -> None:
        if retired == survivor:
            return
        self.aliases[retired] = survivor
        old = self.states.pop(retired, None)
        self._wake_at.pop(retired, None)
        if old is None:
            return
        state = self.states.get(survivor)
        if state is None:
            state = self.states[survivor] = PatientState(survivor)
        self.engine.absorb(state, old)
        self._schedule(survivor, state)

    def _schedule(self, key: str, state: PatientState) -> None:
        due = state.deadlines[0].due if state.deadlines else None
        if due is None:
            self._wake_at.pop(key, None)
        elif self._wake_at.get(key) != due:
            self._wake_at[key] = due
            self._seq += 1
            heapq.heappush(self._wakeups, (due, self._seq, key))

    def _fire(self, limit: int, *, inclusive: bool) -> list[Alert]:
        alerts: list[Alert] = []
        wakeups = self._wakeups
        while wakeups and (wakeups[0][0] < limit or (inclusive and wakeups[0][0] == limit)):
            due, _, key = heapq.heappop(wakeups)
            if self._wake_at.get(key) != due:
                continue  # superseded
            del self._wake_at[key]
            state = self.states.get(key)
            if state is None:
                continue
            alerts.extend(self.engine.fire_due_micros(state, due))
            self._schedule(key, state)
        return alerts


@dataclass
class FeedRun:
    """Feeds to read and where results go; :meth:`run` does the work."""

    region: Region
    received_time: datetime
    fallback_charset: str = "iso-8859-1"
    on_alert: Callable[[Alert], None] = print
    on_rejection: Callable[[Rejection], None] = print
    stats: Stats = field(default_factory=Stats)

    def run(self, feeds: Iterable[tuple[str, bytes]], until: datetime | None = None) -> Simulation:
        """Simulate ``feeds`` (name, contents) in order, then move the clock to ``until``."""
        simulation = Simulation(self.region)
        emit = self.on_alert
        for name, data in feeds:
            for events in self._messages(name, data):
                for alert in simulation.message(events):
                    emit(alert)
                    self.stats.alerts += 1
        for alert in simulation.finish(until):
            emit(alert)
            self.stats.alerts += 1
        self.stats.patients = len(simulation.states)
        return simulation

    def _messages(self, name: str, data: bytes) -> Iterator[Sequence[EventLike]]:
        stats = self.stats
        received = self.received_time
        fallback = self.fallback_charset
        for item in iter_feed(data):
            stats.messages += 1
            try:
                message = parse_message(item.raw, fallback_charset=fallback)
                events = translate(message, raw=item.raw, received_time=received)
            except MessageRejected as exc:
                stats.rejected += 1
                self.on_rejection(
                    Rejection(name, item.position, exc.reason, exc.detail, exc.control_id)
                )
                continue
            except Exception as exc:  # a translator bug must not stop the replay
                stats.rejected += 1
                self.on_rejection(
                    Rejection(
                        name,
                        item.position,
                        "internal-error",
                        f"{type(exc).__name__} while translating",
                    )
                )
                continue
            stats.events += len(events)
            yield events
