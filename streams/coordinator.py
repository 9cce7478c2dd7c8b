"""Between the Faust agent and the rule engine: one consumed record at a time.

The agent hands every record of the events and control topics to a
:class:`Coordinator`, together with the patient table (a Faust table, or any
mapping in tests) and the wall clock. The coordinator loads the patient's
:class:`Entry`, runs the pure :class:`streams.engine.Engine`, keeps the changed
entry and hands new alerts to the :class:`AlertSink` (``streams.delivery``). It
returns the control messages to send (merges and forwarded events); it never does
I/O.

Changed entries are written to the table by :meth:`Coordinator.flush`, once per
patient however many records of the batch touched it (one changelog record, not
one per event). The agent flushes at the end of every batch, before the batch's
offsets are acknowledged: an offset is never committed before the table value
that reflects it was handed to the producer.

An entry is written as one table value, so these travel together through the
table's changelog:

- ``state``: the engine's :class:`PatientState`;
- ``outbox``: alerts raised but not yet known to be published. Alerts are
  published asynchronously, so after a crash the outbox, not a reprocessed event
  (the engine remembers raised dedup keys and would not raise them again), is
  what gets them out. Entries leave the outbox once the sink confirms them;
- ``applied``: the offset of the last event (``e``) and control record (``c``)
  applied, so a record reprocessed after a crash is not applied twice;
- ``alias``/``moved``/``absorbed``: ``ADT^A40`` merges (see :meth:`Coordinator.on_event`).

When the engine raises on an event (or a deadline), the patient's entry is left as
it was, the record is kept as an :class:`~streams.engine_errors.EngineFailure`
(:meth:`Coordinator.take_failures`; the agent writes it to the engine-errors topic
with the batch) and the partition goes on: see :mod:`streams.engine_errors` for the
record and how to replay it once the rule is fixed.

Table values are compact JSON bytes (:meth:`Entry.encode`): short keys, empty
fields left out. :meth:`Entry.decode` also reads the first release's format
(version 1, long keys, every field present), so a store or changelog written by it
is still read after an upgrade.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import schemas
import schemas.codec
from carebus.log import get_logger
from schemas.errors import DecodeError, UnknownSchema
from streams.alert import Alert
from streams.clock import ClockWatch, DeadlineIndex, FeedClock, PartitionClocks
from streams.control import (
    BadControlMessage,
    ControlMessage,
    Forwarded,
    MergeRequest,
    StateMove,
    Tick,
    partition_for,
)
from streams.control import decode as decode_control
from streams.deadlines import SECOND, from_micros, to_micros
from streams.engine import Engine
from streams.engine_errors import EngineFailure, Stage, describe, pairs, rule_of
from streams.sensors import NullSensors, WorkerSensors
from streams.state import PatientState
from streams.view import MERGED, SCHEMAS, EventView

log = get_logger(__name__)

#: The format :meth:`Entry.encode` writes; :meth:`Entry.decode` also reads version 1.
ENTRY_VERSION = 2
#: Give up on an event forwarded this many times (a chain of merges, or a bug).
MAX_HOPS = 8
#: Patients whose decoded entry and state are kept in memory (the table stays the truth).
CACHE_SIZE = 20_000
#: Outboxes tidied per tick and partition at most (the rest wait for the next tick):
#: tidying is housekeeping, one table write each, and after a backlog a burst of
#: confirmations must not crowd out live events (the next event of a patient tidies
#: its outbox anyway).
TIDY_PER_TICK = 100
#: The patient-table key of events partition ``p``'s :class:`~streams.clock.FeedClock`
#: (``FEED_CLOCK_PREFIX + str(p)``). No patient key starts with ``:`` (a local key is
#: ``AUTHORITY:ID`` with the sending facility for an empty authority, and MSH-4 is
#: required; the others are NHS numbers or ``NHS:ID``), so none can collide with it.
FEED_CLOCK_PREFIX = ":feed-clock:"
#: The kinds of the ops notes the coordinator raises about the live clock.
CLOCK_HELD_BACK = "clock-held-back"
CLOCK_CAUGHT_UP = "clock-caught-up"


class AlertSink(Protocol):
    """Where new alerts go: ``streams.delivery.AlertDelivery``."""

    def submit(self, partition: int, alerts: Sequence[Alert]) -> None:
        """Publish these alerts of ``partition`` (at most once per dedup key)."""

    def is_published(self, partition: int, dedup_key: str) -> bool:
        """True when the alert is known to be on the alert topic."""

    def take_confirmed(self, partition: int) -> set[str]:
        """Patient keys with alerts published since the last call."""


class PatientTable(Protocol):
    """The patient table: a Faust table of :meth:`Entry.encode` bytes, keyed by patient key."""

    def get(self, key: str) -> Any:
        """The value of ``key``, or None."""

    def __setitem__(self, key: str, value: bytes) -> None:
        """Write the value of ``key``."""

    def items(self) -> Iterable[tuple[str, Any]]:
        """Every (key, value) this worker holds."""


class Outgoing(NamedTuple):
    """A control message to send to ``partition`` of the control topic."""

    partition: int
    key: str | None
    message: ControlMessage


@dataclass
class Entry:
    """One patient's value in the table (see the module docstring)."""

    partition: int
    state: dict[str, Any] | None = None
    next_due: int | None = None
    outbox: list[dict[str, Any]] = field(default_factory=list)
    applied: dict[str, int] = field(default_factory=dict)
    alias: str | None = None
    moved: dict[str, Any] | None = None
    absorbed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, short keys; empty fields are left out."""
        out: dict[str, Any] = {"v": ENTRY_VERSION, "p": self.partition}
        if self.state is not None:
            out["s"] = self.state
        if self.next_due is not None:
            out["d"] = self.next_due
        if self.outbox:
            out["o"] = self.outbox
        if self.applied:
            out["a"] = self.applied
        if self.alias is not None:
            out["al"] = self.alias
        if self.moved is not None:
            out["m"] = self.moved
        if self.absorbed:
            out["ab"] = self.absorbed
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Entry:
        """Inverse of :meth:`to_dict`, version 1 too; ``ValueError`` for an unknown format."""
        version = raw.get("v")
        if version == 1:
            raw = {
                "p": raw["p"],
                "s": raw["state"],
                "d": raw["due"],
                "o": raw["outbox"],
                "a": raw["applied"],
                "al": raw["alias"],
                "m": raw["moved"],
                "ab": raw["absorbed"],
            }
        elif version != ENTRY_VERSION:
            raise ValueError(f"unknown patient entry format {version!r}")
        due = raw.get("d")
        return cls(
            partition=int(raw["p"]),
            state=raw.get("s"),
            next_due=None if due is None else int(due),
            outbox=list(raw.get("o") or ()),
            applied={str(k): int(v) for k, v in (raw.get("a") or {}).items()},
            alias=raw.get("al"),
            moved=raw.get("m"),
            absorbed=[str(k) for k in raw.get("ab") or ()],
        )

    def encode(self) -> bytes:
        """The table value: compact JSON of :meth:`to_dict`, UTF-8."""
        return _JSON.encode(self.to_dict()).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes | str | dict[str, Any]) -> Entry:
        """A table value (also an already parsed one) as an entry; ``ValueError`` if unreadable."""
        if isinstance(raw, dict):
            return cls.from_dict(raw)
        try:
            parsed = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"unreadable patient entry: {type(exc).__name__}") from None
        if not isinstance(parsed, dict):
            raise ValueError("unreadable patient entry: not an object")
        return cls.from_dict(parsed)


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


class Coordinator:
    """Applies events, ticks and merge messages to the patient table."""

    def __init__(
        self,
        engine: Engine,
        sink: AlertSink,
        *,
        partitions: int,
        sensors: WorkerSensors | None = None,
        feed_idle_s: float = 300.0,
        clock_behind_alert_s: float = 3600.0,
    ) -> None:
        self.engine = engine
        self.sink = sink
        self.partitions = partitions
        self.sensors: WorkerSensors = sensors or NullSensors()
        self.index = DeadlineIndex()
        self.clocks = PartitionClocks()
        #: events partition -> its live clock (the feeds' watermarks read there)
        self.feeds: dict[int, FeedClock] = {}
        self._feed_idle = int(feed_idle_s * SECOND)
        #: partitions whose feed clock changed since the last :meth:`take_writes`
        self._feeds_dirty: set[int] = set()
        #: events partition -> provider -> how far (µs) it held that partition's clock
        #: behind the wall clock at the last tick
        self._behind: dict[int, dict[str, int]] = {}
        self.watch = ClockWatch(int(clock_behind_alert_s * SECOND))
        #: ops notes (JSON objects) raised and not yet taken by :meth:`take_ops`
        self._ops: list[dict[str, Any]] = []
        self.active: frozenset[int] = frozenset()
        self._needs_scan = True
        self.skipped = 0
        #: engine failures since the last :meth:`take_failures`
        self._failures: list[EngineFailure] = []
        #: partition -> patients whose outbox has confirmed alerts to drop
        self._tidy: dict[int, set[str]] = {}
        #: key -> (entry, state): the latest entry of recently seen patients (its ``state``
        #: field may lag behind the live state until :meth:`flush`)
        self._cache: OrderedDict[str, tuple[Entry, PatientState | None]] = OrderedDict()
        #: key -> (entry, live state or None, partition of the record that changed it):
        #: changed since the last :meth:`take_writes`
        self._dirty: dict[str, tuple[Entry, PatientState | None, int]] = {}

    # -- assignment ----------------------------------------------------------------

    def assign(self, partitions: Iterable[int]) -> None:
        """These events partitions are now this worker's; rescan before the next record."""
        self.active = frozenset(partitions)
        self._cache.clear()
        self._tidy.clear()
        self.index.forget(self.index.partitions())
        self.clocks.forget(range(self.partitions))
        self.feeds.clear()
        self._feeds_dirty.clear()
        self._behind.clear()
        self._needs_scan = True

    def scan_if_needed(self, table: PatientTable) -> None:
        """After an assignment: index the deadlines and resubmit the outboxes of the table."""
        if not self._needs_scan:
            return
        self._needs_scan = False
        patients = pending = 0
        for key, raw in table.items():
            if raw is None:
                continue
            if key.startswith(FEED_CLOCK_PREFIX):
                self._restore_feed_clock(key, raw)
                continue
            entry = Entry.decode(raw)
            if entry.partition not in self.active:
                continue
            patients += 1
            self.index.schedule(entry.partition, key, entry.next_due)
            if entry.outbox:
                pending += len(entry.outbox)
                self.sink.submit(entry.partition, _alerts(entry.outbox))
        self.sensors.set_deadlines_pending(len(self.index))
        log.info(
            "patient table scanned",
            partitions=sorted(self.active),
            patients=patients,
            deadlines=len(self.index),
            unconfirmed_alerts=pending,
        )

    def take_writes(self) -> dict[int, list[tuple[str, bytes]]]:
        """The entries changed since the last call, encoded, each key once, by the
        partition of the records that changed them (the table partition to write).

        The caller writes them to the table after each batch of records, before the
        batch's offsets may be committed (:meth:`flush` does it for a plain mapping).
        """
        if not self._dirty and not self._feeds_dirty:
            return {}
        dirty, self._dirty = self._dirty, {}
        out: dict[int, list[tuple[str, bytes]]] = {}
        for partition in sorted(self._feeds_dirty):
            raw = {"p": partition, **self.feeds[partition].to_dict()}
            value = _JSON.encode(raw).encode("utf-8")
            out.setdefault(partition, []).append((f"{FEED_CLOCK_PREFIX}{partition}", value))
        self._feeds_dirty.clear()
        for key, (entry, state, partition) in dirty.items():
            if state is not None:
                entry.state = state.to_dict()
            out.setdefault(partition, []).append((key, entry.encode()))
        return out

    def flush(self, table: PatientTable) -> int:
        """Write :meth:`take_writes` to ``table`` (any partition); returns how many."""
        count = 0
        for writes in self.take_writes().values():
            for key, value in writes:
                table[key] = value
                count += 1
        return count

    def pending_writes(self) -> int:
        """Entries changed and not yet flushed."""
        return len(self._dirty)

    # -- records -------------------------------------------------------------------

    def on_event(
        self,
        table: PatientTable,
        partition: int,
        offset: int,
        *,
        key: str | None,
        value: bytes,
        now: int,
        headers: Any = (),
    ) -> list[Outgoing]:
        """Apply one record of the events topic; ``now`` is the wall clock (epoch µs).

        Deadlines of the partition due strictly before the event's time (capped at
        the partition's live clock) fire first. An ``ADT^A40`` merge whose retired
        key belongs to another partition returns a :class:`MergeRequest` for it. A
        feed watermark (:data:`schemas.FEED_SCHEMAS`) is no patient event: it moves
        the partition's live clock (:meth:`on_watermark`). ``headers`` (the
        record's, as consumed: (name, value) pairs or a mapping) go with the record
        to the engine-errors topic if the engine raises on it (only then are they read).
        """
        decoded = self._decode(value, partition, offset)
        if decoded is None:
            return []
        if decoded[0] in schemas.FEED_SCHEMAS:
            self.on_watermark(table, partition, offset, decoded[1], now)
            return []
        view = self._view_of(decoded[0], decoded[1], partition, offset)
        if view is None:
            return []
        self._advance(table, partition, view.time, now)
        target = key or view.patient_key
        return self._apply(
            table,
            partition,
            ("e", offset),
            target,
            view,
            value=value,
            hops=0,
            record_key=key,
            headers=headers,
        )

    def on_control(
        self,
        table: PatientTable,
        partition: int,
        offset: int,
        *,
        value: bytes,
        now: int,
    ) -> list[Outgoing]:
        """Apply one record of the control topic."""
        try:
            message = decode_control(value)
        except BadControlMessage as exc:
            self._skip("bad-control-message", partition, offset, exc)
            return []
        if isinstance(message, Tick):
            self.on_tick(table, partition, message.now)
            return []
        if isinstance(message, MergeRequest):
            return self._on_merge_request(table, partition, message)
        if isinstance(message, StateMove):
            return self._on_state_move(table, partition, message)
        view = self._view(message.value, partition, offset)
        if view is None:
            return []
        self._advance(table, partition, view.time, now)
        return self._apply(
            table,
            partition,
            ("c", offset),
            message.target,
            view,
            value=message.value,
            hops=message.hops,
            record_key=message.target,
        )

    def on_tick(self, table: PatientTable, partition: int, now: int) -> None:
        """The wall clock reached ``now`` in ``partition``: fire what the live clock made
        due, tidy outboxes, and report which providers hold the clock back."""
        published = self.sink.is_published
        tidy = self._tidy.setdefault(partition, set())
        tidy |= self.sink.take_confirmed(partition)
        for _ in range(min(len(tidy), TIDY_PER_TICK)):
            key = tidy.pop()
            entry = self._load(table, key, partition)
            kept = [a for a in entry.outbox if not published(partition, a["dedup_key"])]
            if len(kept) != len(entry.outbox):
                entry.outbox = kept
                self._touch(key, entry, partition)
        feed = self.feeds.get(partition)
        floor = None if feed is None else feed.floor
        due = self._due_by(partition, now)
        if feed is not None and feed.floor != floor:
            self._feeds_dirty.add(partition)  # kept at most once a tick
        self._fire(table, partition, self.index.pop_due(partition, due), due)
        self.sensors.set_deadlines_pending(len(self.index))
        self._report_behind(partition, now)

    def on_watermark(
        self,
        table: PatientTable,
        partition: int,
        offset: int,
        record: Mapping[str, Any],
        now: int,
    ) -> None:
        """Take in a ``FeedWatermark`` record read on ``partition`` (``now``: wall clock).

        Every event it covers was read before it on this partition, so the live clock
        may move up to it at once (while some provider is not idle: otherwise only a
        tick, sent while the worker is caught up, moves the clock to the wall clock).
        """
        try:
            provider, source = str(record["provider"]), str(record["source"])
            event_time = to_micros(record["event_time"])
            received = to_micros(record["last_received"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._skip("malformed-watermark", partition, offset, exc)
            return
        feed = self.feeds.get(partition)
        if feed is None:
            feed = self.feeds[partition] = FeedClock(self._feed_idle)
        if feed.observe(provider, source, event_time, received):
            self._feeds_dirty.add(partition)
        if feed.watermarks(now):
            due = self._due_by(partition, now)
            self._fire(table, partition, self.index.pop_due(partition, due), due)

    def take_ops(self) -> list[dict[str, Any]]:
        """The ops notes raised since the last call (JSON objects, for the ops topic)."""
        ops, self._ops = self._ops, []
        return ops

    def live_clock(self, partition: int, now: int) -> int:
        """The live clock of ``partition`` at wall time ``now`` (``now`` without watermarks)."""
        feed = self.feeds.get(partition)
        return now if feed is None else feed.live(now)

    def _due_by(self, partition: int, now: int) -> int:
        """The latest deadline the live clock lets fire: every one at or before the wall
        clock, but only those strictly before a watermark holding the clock back (a
        message of that provider stamped at the watermark may still come)."""
        live = self.live_clock(partition, now)
        return now if live >= now else live - 1

    def _report_behind(self, partition: int, now: int) -> None:
        feed = self.feeds.get(partition)
        self._behind[partition] = feed.holding(now) if feed is not None else {}
        behind: dict[str, int] = {}
        for p, held in self._behind.items():
            if p not in self.active:
                continue
            for provider, micros in held.items():
                behind[provider] = max(micros, behind.get(provider, 0))
        self.sensors.set_clock_behind({p: m / SECOND for p, m in behind.items()})
        raised, cleared = self.watch.check(behind)
        threshold_s = self.watch.threshold_micros / SECOND
        for provider in raised:
            seconds = behind[provider] / SECOND
            log.warning(
                "a provider holds the live clock back",
                provider=provider,
                seconds=round(seconds),
                limit_s=threshold_s,
            )
            self._ops.append(_ops_note(CLOCK_HELD_BACK, provider, now, seconds, threshold_s))
        for provider in cleared:
            log.info("the live clock is no longer held back", provider=provider)
            seconds = behind.get(provider, 0) / SECOND
            self._ops.append(_ops_note(CLOCK_CAUGHT_UP, provider, now, seconds, threshold_s))

    def _restore_feed_clock(self, key: str, raw: Any) -> None:
        try:
            parsed = json.loads(raw) if not isinstance(raw, dict) else raw
            partition = int(parsed["p"])
            feed = FeedClock.from_dict(parsed, self._feed_idle)
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("feed clock unreadable; starting afresh", error=type(exc).__name__)
            return
        if partition in self.active:
            self.feeds[partition] = feed

    # -- internals -----------------------------------------------------------------

    def _view(self, value: bytes, partition: int, offset: int) -> EventView | None:
        decoded = self._decode(value, partition, offset)
        return None if decoded is None else self._view_of(*decoded, partition, offset)

    def _decode(
        self, value: bytes, partition: int, offset: int
    ) -> tuple[str, dict[str, Any]] | None:
        try:
            return schemas.codec.decode(value)
        except (DecodeError, UnknownSchema) as exc:
            self._skip("undecodable-event", partition, offset, exc)
            return None

    def _view_of(
        self, schema: str, record: dict[str, Any], partition: int, offset: int
    ) -> EventView | None:
        view_schema = schema.rpartition(".")[2]
        if not schema.startswith("carebus.events.") or view_schema not in SCHEMAS:
            self._skip("not-an-event", partition, offset, None)
            return None
        try:
            return EventView(schema, record)
        except (KeyError, TypeError, ValueError) as exc:
            self._skip("malformed-event", partition, offset, exc)
            return None

    def _skip(self, reason: str, partition: int, offset: int, exc: Exception | None) -> None:
        self.skipped += 1
        log.warning(
            "record skipped",
            reason=reason,
            partition=partition,
            offset=offset,
            error=type(exc).__name__ if exc else None,
        )

    def _failed(
        self,
        stage: Stage,
        exc: Exception,
        *,
        partition: int,
        offset: int,
        source: str,
        key: str | None,
        value: bytes,
        headers: Any,
    ) -> None:
        """The engine raised: keep the record for the engine-errors topic, count it, go on."""
        error, message = describe(exc)
        rule = rule_of(exc, self.engine.rules)
        log.exception(  # called in the except block: the traceback is the current one
            "rule engine failed; record kept on the engine-errors topic",
            stage=stage,
            rule=rule,
            error=error,
            partition=partition,
            offset=offset,
        )
        self.skipped += 1
        self.sensors.engine_error(stage, rule)
        self._failures.append(
            EngineFailure(
                stage, rule, error, message, partition, offset, source, key, value, pairs(headers)
            )
        )

    def take_failures(self) -> list[EngineFailure]:
        """Engine failures since the last call, oldest first, for the engine-errors topic.

        The caller hands them to the producer with the batch's table writes, before
        the batch's offsets may be committed (``streams.engine_errors``).
        """
        failures, self._failures = self._failures, []
        return failures

    def _advance(self, table: PatientTable, partition: int, time: int, now: int) -> None:
        cap = now if partition not in self.feeds else self.live_clock(partition, now)
        moved = self.clocks.advance(partition, time, cap)
        if moved is not None:
            self._fire(table, partition, self.index.pop_due(partition, moved - 1), moved - 1)

    def _fire(self, table: PatientTable, partition: int, keys: Sequence[str], now: int) -> None:
        for key in keys:
            entry = self._load(table, key, partition)
            if entry.alias is not None or entry.state is None:
                continue
            state = self._state(key, entry)
            try:
                alerts = self.engine.fire_due_micros(state, now)
            except Exception as exc:  # a bug in one rule must not stop the region's alerts
                self._forget_failed(key)
                self._failed(
                    "deadline",
                    exc,
                    partition=partition,
                    offset=-1,
                    source="e",
                    key=key,
                    value=b"",
                    headers=(),
                )
                continue
            self._save(table, partition, key, entry, state=state, alerts=alerts)

    def _load(self, table: PatientTable, key: str, partition: int) -> Entry:
        dirty = self._dirty.get(key)
        if dirty is not None:
            return dirty[0]
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached[0]
        raw = table.get(key)
        return Entry(partition) if raw is None else Entry.decode(raw)

    def _live(self, key: str, entry: Entry) -> PatientState | None:
        """The live state kept with ``entry`` (newer than ``entry.state``), if any."""
        for kept in (self._dirty.get(key), self._cache.get(key)):
            if kept is not None and kept[0] is entry and kept[1] is not None:
                return kept[1]
        return None

    def _state(self, key: str, entry: Entry) -> PatientState:
        """The live state of ``entry`` (kept with it, else decoded, else new)."""
        live = self._live(key, entry)
        if live is not None:
            return live
        return PatientState(key) if entry.state is None else PatientState.from_dict(entry.state)

    def _forget_failed(self, key: str) -> None:
        """The engine failed on ``key``: next time, start again from the table's value.

        (When the patient changed earlier in this batch the live state is kept, with
        whatever the failed call changed: the table does not have those changes yet.)
        """
        if key not in self._dirty:
            self._cache.pop(key, None)

    def _touch(self, key: str, entry: Entry, partition: int) -> None:
        """Mark ``entry`` (changed outside :meth:`_save`) for the next :meth:`take_writes`."""
        self._dirty[key] = (entry, self._live(key, entry), partition)

    def _save(
        self,
        table: PatientTable,
        partition: int,
        key: str,
        entry: Entry,
        *,
        state: PatientState | None,
        alerts: Sequence[Alert],
    ) -> None:
        if state is not None:
            entry.next_due = state.next_deadline()
        is_published = self.sink.is_published
        if entry.outbox:
            entry.outbox = [a for a in entry.outbox if not is_published(partition, a["dedup_key"])]
        entry.outbox.extend(a.to_dict() for a in alerts)
        entry.partition = partition
        self._dirty[key] = (entry, state, partition)
        self._cache[key] = (entry, state)
        self._cache.move_to_end(key)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        self.index.schedule(partition, key, entry.next_due)
        if alerts:
            self.sink.submit(partition, alerts)

    def _apply(
        self,
        table: PatientTable,
        partition: int,
        position: tuple[str, int],
        key: str,
        view: EventView,
        *,
        value: bytes,
        hops: int,
        record_key: str | None,
        headers: Any = (),
    ) -> list[Outgoing]:
        kind, offset = position
        entry = self._load(table, key, partition)
        if entry.alias is not None:
            if hops >= MAX_HOPS:
                self._skip("too-many-forwards", partition, offset, None)
                return []
            target = entry.alias
            forwarded = Forwarded(target, value, hops + 1)
            return [Outgoing(partition_for(target, self.partitions), target, forwarded)]
        if entry.applied.get(kind, -1) >= offset:
            # Applied before a crash, but perhaps not yet in the changelog or published.
            self._touch(key, entry, partition)
            if entry.outbox:
                self.sink.submit(partition, _alerts(entry.outbox))
            return []
        state = self._state(key, entry)
        try:
            alerts = self.engine.process_view(state, view)
        except Exception as exc:  # a bug in one rule must not stop the region's alerts
            self._forget_failed(key)
            self._failed(
                "event",
                exc,
                partition=partition,
                offset=offset,
                source=kind,
                key=record_key,
                value=value,
                headers=headers,
            )
            return []
        out: list[Outgoing] = []
        if view.schema == MERGED:
            out = self._merge(table, partition, key, state=state, entry=entry, view=view)
        entry.applied[kind] = offset
        self._save(table, partition, key, entry, state=state, alerts=alerts)
        self.sensors.event_processed(view.schema)
        return out

    def _merge(
        self,
        table: PatientTable,
        partition: int,
        survivor: str,
        *,
        state: PatientState,
        entry: Entry,
        view: EventView,
    ) -> list[Outgoing]:
        retired = view.record.get("retired_key") or ""
        if not retired or retired == survivor or retired in entry.absorbed:
            return []
        where = partition_for(retired, self.partitions)
        if where != partition:
            return [Outgoing(where, retired, MergeRequest(retired, survivor))]
        moved = self._retire(table, partition, retired, survivor)
        self._absorb(state, entry, retired, moved)
        return []

    def _retire(
        self, table: PatientTable, partition: int, retired: str, survivor: str
    ) -> dict[str, Any] | None:
        """Alias ``retired`` to ``survivor``; return the state it held (kept for resends)."""
        entry = self._load(table, retired, partition)
        if entry.alias == survivor:
            return entry.moved
        if entry.alias is not None:
            log.warning("merge of a key already retired into another", partition=partition)
            return None
        live = self._live(retired, entry)
        if live is not None:
            entry.state = live.to_dict()
        entry.alias, entry.moved, entry.state, entry.next_due = survivor, entry.state, None, None
        self._save(table, partition, retired, entry, state=None, alerts=())
        return entry.moved

    def _absorb(
        self, state: PatientState, entry: Entry, retired: str, moved: dict[str, Any] | None
    ) -> None:
        if moved is not None:
            self.engine.absorb(state, PatientState.from_dict(moved))
        entry.absorbed.append(retired)

    def _on_merge_request(
        self, table: PatientTable, partition: int, message: MergeRequest
    ) -> list[Outgoing]:
        moved = self._retire(table, partition, message.retired, message.survivor)
        move = StateMove(message.retired, message.survivor, moved)
        return [Outgoing(partition_for(message.survivor, self.partitions), message.survivor, move)]

    def _on_state_move(
        self, table: PatientTable, partition: int, message: StateMove
    ) -> list[Outgoing]:
        entry = self._load(table, message.survivor, partition)
        if entry.alias is not None:
            if entry.alias == message.retired:
                log.warning("merge would make an alias cycle; ignored", partition=partition)
                return []
            target = entry.alias
            move = StateMove(message.retired, target, message.state)
            return [Outgoing(partition_for(target, self.partitions), target, move)]
        if message.retired in entry.absorbed:
            return []
        state = self._state(message.survivor, entry)
        self._absorb(state, entry, message.retired, message.state)
        self._save(table, partition, message.survivor, entry, state=state, alerts=())
        return []


def _ops_note(kind: str, provider: str, now: int, seconds: float, limit_s: float) -> dict[str, Any]:
    """An ops note about the live clock (the ops topic's JSON, like the feed watch's)."""
    if kind == CLOCK_HELD_BACK:
        summary = (
            f"{provider} holds the worker's clock {seconds / 60:.0f} min behind the wall clock "
            f"(over {limit_s / 60:g} min): its deadlines wait for its messages"
        )
    else:
        summary = f"{provider} no longer holds the worker's clock back over {limit_s / 60:g} min"
    return {
        "kind": kind,
        "provider": provider,
        "raised_at": from_micros(now).isoformat(),
        "behind_s": round(seconds, 3),
        "limit_s": limit_s,
        "summary": summary,
    }


def _alerts(outbox: Iterable[dict[str, Any]]) -> list[Alert]:
    return [Alert.from_dict(a) for a in outbox]
