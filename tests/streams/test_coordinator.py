"""Tests for streams/coordinator.py: events, ticks and merges against a plain dict table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

import schemas.codec
from streams.alert import Alert
from streams.control import Forwarded, MergeRequest, StateMove, Tick, encode, partition_for
from streams.coordinator import Coordinator, Entry, Outgoing
from streams.deadlines import SECOND, from_micros, to_micros
from streams.engine import Engine
from streams.view import StreamEvent
from tests.streams.events import Feed, london

PARTITIONS = 2
#: A wall clock well after every event of these tests.
NOW = to_micros(london("2026-06-01 00:00"))


class Sink:
    """Records submitted alerts; 'publishes' on request."""

    def __init__(self) -> None:
        self.submitted: list[tuple[int, Alert]] = []
        self.published: set[str] = set()
        self.confirmed: dict[int, set[str]] = {}

    def submit(self, partition: int, alerts: Sequence[Alert]) -> None:
        self.submitted.extend((partition, a) for a in alerts)

    def is_published(self, partition: int, dedup_key: str) -> bool:
        return dedup_key in self.published

    def take_confirmed(self, partition: int) -> set[str]:
        return self.confirmed.pop(partition, set())

    def publish_all(self) -> None:
        for partition, alert in self.submitted:
            self.published.add(alert.dedup_key)
            self.confirmed.setdefault(partition, set()).add(alert.patient)

    def rules(self) -> list[str]:
        return [a.rule for _, a in self.submitted]


def keys_in(partition: int, count: int = 1, prefix: str = "RX1:MRN") -> list[str]:
    """Patient keys that the default partitioner puts in ``partition``."""
    found = [
        f"{prefix}{n}"
        for n in range(1000)
        if partition_for(f"{prefix}{n}", PARTITIONS) == partition
    ]
    return found[:count]


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def coordinator(engine: Engine, sink: Sink) -> Coordinator:
    c = Coordinator(engine, sink, partitions=PARTITIONS)
    c.assign(range(PARTITIONS))
    return c


def feed_event(
    coordinator: Coordinator, table: dict[str, Any], event: StreamEvent, offset: int, now: int = NOW
) -> list[Outgoing]:
    """Hand one event to the coordinator as the agent would."""
    partition = partition_for(event.key, PARTITIONS)
    value = schemas.codec.encode(event.schema, event.record)
    out = coordinator.on_event(table, partition, offset, key=event.key, value=value, now=now)
    coordinator.flush(table)
    return out


def deliver(
    coordinator: Coordinator, table: dict[str, Any], out: Outgoing, offset: int
) -> list[Outgoing]:
    """Hand one control message to the coordinator of its partition."""
    sent = coordinator.on_control(table, out.partition, offset, value=encode(out.message), now=NOW)
    coordinator.flush(table)
    return sent


def tick(coordinator: Coordinator, table: dict[str, Any], partition: int, now: int) -> None:
    """A wall-clock tick for ``partition``, then the flush the agent does after a batch."""
    coordinator.on_tick(table, partition, now)
    coordinator.flush(table)


def hospice_discharge(feed: Feed) -> list[StreamEvent]:
    return [
        feed.adt("A01", "RX1", "2026-02-09 09:00"),
        feed.adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="88"),
    ]


class CountingTable(dict[str, Any]):
    """A plain dict table that counts writes (one per changelog record in Faust)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)


class TestEntryFormat:
    def test_entry_round_trips_as_compact_json_without_empty_fields(self) -> None:
        """Encoded entries use short keys and leave out empty fields; decode restores them."""
        entry = Entry(3, state={"k": 1}, next_due=42, applied={"e": 9})
        raw = entry.encode()
        assert json.loads(raw) == {"v": 2, "p": 3, "s": {"k": 1}, "d": 42, "a": {"e": 9}}
        assert b" " not in raw
        assert Entry.decode(raw) == entry

    def test_first_release_entries_are_still_read(self) -> None:
        """A version 1 value (long keys, as Faust's JSON serializer stored it) decodes."""
        v1: dict[str, Any] = {
            "v": 1,
            "p": 1,
            "state": {"k": 2},
            "due": 7,
            "outbox": [{"dedup_key": "x"}],
            "applied": {"e": 5, "c": 2},
            "alias": None,
            "moved": None,
            "absorbed": ["RX1:OLD"],
        }
        entry = Entry.decode(json.dumps(v1).encode())
        assert entry == Entry(
            1,
            state={"k": 2},
            next_due=7,
            outbox=[{"dedup_key": "x"}],
            applied={"e": 5, "c": 2},
            absorbed=["RX1:OLD"],
        )
        assert Entry.decode(v1) == entry

    def test_unknown_or_unreadable_values_are_value_errors(self) -> None:
        """A value of an unknown version, or not JSON at all, raises ValueError."""
        with pytest.raises(ValueError, match="format 9"):
            Entry.decode(b'{"v": 9, "p": 0}')
        with pytest.raises(ValueError, match="unreadable"):
            Entry.decode(b"\xff not json")

    def test_a_first_release_table_is_carried_on(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """An event already applied under version 1 is not applied again after an upgrade."""
        table: dict[str, Any] = {}
        feed = Feed(keys_in(0)[0], verified=False)
        feed_event(coordinator, table, feed.adt("A01", "RX1", "2026-02-09 09:00"), offset=4)
        current = Entry.decode(table[feed.key])
        v1: dict[str, Any] = {
            "v": 1,
            "p": current.partition,
            "state": current.state,
            "due": current.next_due,
            "outbox": [],
            "applied": current.applied,
            "alias": None,
            "moved": None,
            "absorbed": [],
        }
        table[feed.key] = json.dumps(v1).encode()
        coordinator.assign(range(PARTITIONS))  # forget the cache: read the table again
        feed_event(coordinator, table, feed.adt("A01", "RX1", "2026-02-09 09:00"), offset=4)
        assert Entry.decode(table[feed.key]).state == current.state
        assert sink.rules() == ["identity-unverified"]


class TestBatches:
    def test_writes_wait_for_the_flush_and_each_patient_is_written_once(
        self, coordinator: Coordinator
    ) -> None:
        """Records of one batch change the table only at the flush, once per patient."""
        table = CountingTable()
        feed = Feed(keys_in(0)[0], verified=False)
        partition = partition_for(feed.key, PARTITIONS)
        for offset, event in enumerate(hospice_discharge(feed)):
            value = schemas.codec.encode(event.schema, event.record)
            coordinator.on_event(table, partition, offset, key=feed.key, value=value, now=NOW)
        assert table.writes == 0
        assert coordinator.pending_writes() == 1
        assert coordinator.flush(table) == 1
        entry = Entry.decode(table[feed.key])
        assert entry.applied == {"e": 1}
        assert entry.next_due is not None
        assert coordinator.flush(table) == 0

    def test_writes_are_grouped_by_the_partition_of_their_records(
        self, coordinator: Coordinator
    ) -> None:
        """take_writes gives each changed entry under its records' partition, encoded."""
        table: dict[str, Any] = {}
        first, second = keys_in(0)[0], keys_in(1)[0]
        for offset, key in enumerate((first, second)):
            event = Feed(key, verified=False).adt("A01", "RX1", "2026-02-09 09:00")
            value = schemas.codec.encode(event.schema, event.record)
            partition = partition_for(key, PARTITIONS)
            coordinator.on_event(table, partition, offset, key=key, value=value, now=NOW)
        writes = coordinator.take_writes()
        assert {p: [k for k, _ in w] for p, w in writes.items()} == {0: [first], 1: [second]}
        assert Entry.decode(writes[1][0][1]).applied == {"e": 1}
        assert table == {}

    def test_a_later_record_of_the_batch_sees_the_unflushed_entry(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """Within a batch the coordinator reads its own unflushed changes, not the table."""
        table: dict[str, Any] = {}
        feed = Feed(keys_in(0)[0], verified=False)
        event = feed.adt("A01", "RX1", "2026-02-09 09:00")
        value = schemas.codec.encode(event.schema, event.record)
        coordinator.on_event(table, 0, 3, key=feed.key, value=value, now=NOW)
        coordinator.assign([0, 1])  # drops the cache, not the unflushed entry
        coordinator.on_event(table, 0, 4, key=feed.key, value=value, now=NOW)
        coordinator.flush(table)
        assert Entry.decode(table[feed.key]).applied == {"e": 4}
        assert sink.rules() == ["identity-unverified"]


class TestEvents:
    def test_alert_is_submitted_and_kept_in_the_outbox(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """An event rule's alert goes to the sink and stays in the entry until confirmed."""
        table: dict[str, Any] = {}
        feed = Feed(keys_in(0)[0], verified=False)
        feed_event(coordinator, table, feed.adt("A01", "RX1", "2026-02-09 09:00"), offset=7)
        assert sink.rules() == ["identity-unverified"]
        entry = Entry.decode(table[feed.key])
        assert [a["rule"] for a in entry.outbox] == ["identity-unverified"]
        assert entry.applied == {"e": 7}
        assert entry.partition == 0

    def test_reprocessed_event_is_not_applied_again_but_its_outbox_is_resubmitted(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """A record at or below the applied offset changes nothing and resends the outbox."""
        table: dict[str, Any] = {}
        feed = Feed(keys_in(0)[0], verified=False)
        event = feed.adt("A01", "RX1", "2026-02-09 09:00")
        feed_event(coordinator, table, event, offset=3)
        before = dict(table)
        feed_event(coordinator, table, event, offset=3)
        assert table == before
        assert sink.rules() == ["identity-unverified", "identity-unverified"]
        assert len({a.dedup_key for _, a in sink.submitted}) == 1

    def test_confirmed_alerts_leave_the_outbox_on_the_next_tick(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """Once the sink confirms an alert, a tick removes it from the patient's entry."""
        table: dict[str, Any] = {}
        feed = Feed(keys_in(1)[0], verified=False)
        feed_event(coordinator, table, feed.adt("A01", "RX1", "2026-02-09 09:00"), offset=0)
        sink.publish_all()
        tick(coordinator, table, 1, NOW)
        assert Entry.decode(table[feed.key]).outbox == []

    def test_undecodable_record_is_skipped(self, coordinator: Coordinator) -> None:
        """Bytes that are not an Avro event are counted and skipped."""
        table: dict[str, Any] = {}
        out = coordinator.on_event(table, 0, 0, key="k", value=b"garbage", now=NOW)
        assert out == []
        assert table == {}
        assert coordinator.skipped == 1


class TestDeadlines:
    def test_tick_fires_a_deadline_at_its_event_time_moment(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """A wall-clock tick past the deadline raises the alert with the deadline as raised_at."""
        table: dict[str, Any] = {}
        feed = Feed("9434797373")
        for offset, event in enumerate(hospice_discharge(feed)):
            feed_event(coordinator, table, event, offset)
        assert sink.rules() == []
        partition = partition_for(feed.key, PARTITIONS)
        tick(coordinator, table, partition, to_micros(london("2026-02-13 10:59")))
        assert sink.rules() == []
        tick(coordinator, table, partition, to_micros(london("2026-02-13 11:00")))
        assert sink.rules() == ["hospice-handoff-missed"]
        alert = sink.submitted[0][1]
        assert alert.raised_at == london("2026-02-13 11:00")
        assert Entry.decode(table[feed.key]).next_due is None

    def test_a_later_event_in_the_partition_fires_other_patients_deadlines(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """The partition's event clock fires a quiet patient's deadline before the event."""
        table: dict[str, Any] = {}
        quiet, busy = keys_in(0, 2)
        for offset, event in enumerate(hospice_discharge(Feed(quiet))):
            feed_event(coordinator, table, event, offset)
        feed_event(coordinator, table, Feed(busy).adt("A01", "RX1", "2026-02-14 09:00"), 5)
        assert "hospice-handoff-missed" in sink.rules()
        assert sink.submitted[0][1].patient == quiet

    def test_the_event_clock_does_not_run_ahead_of_the_wall_clock(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """An event stamped in the future cannot fire deadlines that are not due by now."""
        table: dict[str, Any] = {}
        quiet, busy = keys_in(0, 2)
        for offset, event in enumerate(hospice_discharge(Feed(quiet))):
            feed_event(coordinator, table, event, offset)
        wall = to_micros(london("2026-02-12 12:00"))
        feed_event(
            coordinator, table, Feed(busy).adt("A01", "RX1", "2030-01-01 09:00"), 5, now=wall
        )
        assert "hospice-handoff-missed" not in sink.rules()

    def test_scan_after_assignment_indexes_deadlines_and_resubmits_outboxes(
        self, engine: Engine, sink: Sink, coordinator: Coordinator
    ) -> None:
        """A new coordinator over a table finds its pending deadlines and unconfirmed alerts."""
        table: dict[str, Any] = {}
        feed = Feed("9434797373")
        for offset, event in enumerate(hospice_discharge(feed)):
            feed_event(coordinator, table, event, offset)
        other = Feed(keys_in(0)[0], verified=False)
        feed_event(coordinator, table, other.adt("A01", "RX1", "2026-02-09 09:00"), 9)
        fresh_sink = Sink()
        fresh = Coordinator(engine, fresh_sink, partitions=PARTITIONS)
        fresh.assign([0, 1])
        fresh.scan_if_needed(table)
        assert fresh_sink.rules() == ["identity-unverified"]
        tick(fresh, table, partition_for(feed.key, PARTITIONS), NOW)
        assert fresh_sink.rules() == ["identity-unverified", "hospice-handoff-missed"]

    def test_scan_ignores_partitions_not_assigned(
        self, engine: Engine, coordinator: Coordinator
    ) -> None:
        """Entries of partitions owned elsewhere are neither indexed nor resubmitted."""
        table: dict[str, Any] = {}
        feed = Feed(keys_in(1)[0], verified=False)
        feed_event(coordinator, table, feed.adt("A01", "RX1", "2026-02-09 09:00"), 0)
        fresh_sink = Sink()
        fresh = Coordinator(engine, fresh_sink, partitions=PARTITIONS)
        fresh.assign([0])
        fresh.scan_if_needed(table)
        assert fresh_sink.submitted == []


class TestMerges:
    def test_merge_within_a_partition_moves_state_and_aliases_the_retired_key(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """The survivor absorbs the retired state; the retired key becomes an alias."""
        table: dict[str, Any] = {}
        survivor, retired = keys_in(0, 2)
        for offset, event in enumerate(hospice_discharge(Feed(retired))):
            feed_event(coordinator, table, event, offset)
        out = feed_event(
            coordinator,
            table,
            Feed(survivor).merged("RX1", "2026-02-12 12:00", retired_key=retired),
            5,
        )
        assert out == []
        assert Entry.decode(table[retired]).alias == survivor
        merged = Entry.decode(table[survivor])
        assert merged.absorbed == [retired]
        assert merged.next_due is not None
        tick(coordinator, table, 0, NOW)
        assert [
            (a.rule, a.patient) for _, a in sink.submitted if a.rule == "hospice-handoff-missed"
        ] == [("hospice-handoff-missed", survivor)]

    def test_merge_across_partitions_hands_the_state_over(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """Merge request to the retired key's partition, state move back to the survivor's."""
        table: dict[str, Any] = {}
        survivor, retired = keys_in(0)[0], keys_in(1)[0]
        for offset, event in enumerate(hospice_discharge(Feed(retired))):
            feed_event(coordinator, table, event, offset)
        out = feed_event(
            coordinator,
            table,
            Feed(survivor).merged("RX1", "2026-02-12 12:00", retired_key=retired),
            5,
        )
        assert out == [Outgoing(1, retired, MergeRequest(retired, survivor))]
        moves = deliver(coordinator, table, out[0], offset=0)
        assert len(moves) == 1 and moves[0].partition == 0
        assert isinstance(moves[0].message, StateMove) and moves[0].message.state is not None
        assert Entry.decode(table[retired]).alias == survivor
        assert deliver(coordinator, table, moves[0], offset=0) == []
        assert Entry.decode(table[survivor]).absorbed == [retired]
        due = Entry.decode(table[survivor]).next_due
        assert deliver(coordinator, table, moves[0], offset=1) == []
        assert Entry.decode(table[survivor]).next_due == due

    def test_a_repeated_merge_request_resends_the_same_state(
        self, coordinator: Coordinator
    ) -> None:
        """A merge request reprocessed after a crash moves the kept state again."""
        table: dict[str, Any] = {}
        survivor, retired = keys_in(0)[0], keys_in(1)[0]
        feed_event(coordinator, table, Feed(retired).adt("A01", "RX1", "2026-02-09 09:00"), 0)
        request = Outgoing(1, retired, MergeRequest(retired, survivor))
        first = deliver(coordinator, table, request, offset=0)
        again = deliver(coordinator, table, request, offset=0)
        assert first == again

    def test_events_under_a_retired_key_are_forwarded_to_the_survivor(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """An event keyed by a retired key is forwarded, then applied to the survivor."""
        table: dict[str, Any] = {}
        survivor, retired = keys_in(0)[0], keys_in(1)[0]
        feed_event(coordinator, table, Feed(retired).adt("A01", "RX1", "2026-02-09 09:00"), 0)
        request = Outgoing(1, retired, MergeRequest(retired, survivor))
        deliver(coordinator, table, deliver(coordinator, table, request, 0)[0], 0)
        late = Feed(retired).adt("A03", "RX1", "2026-02-12 11:00", discharge_destination="88")
        out = feed_event(coordinator, table, late, offset=1)
        assert len(out) == 1 and isinstance(out[0].message, Forwarded)
        assert out[0].partition == 0 and out[0].message.target == survivor
        assert deliver(coordinator, table, out[0], offset=1) == []
        assert Entry.decode(table[survivor]).applied == {"c": 1}
        tick(coordinator, table, 0, NOW)
        assert [a.patient for _, a in sink.submitted if a.rule == "hospice-handoff-missed"] == [
            survivor
        ]

    def test_a_tick_message_on_the_control_topic_fires_deadlines(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """A Tick record on the control topic is the wall clock for its partition."""
        table: dict[str, Any] = {}
        feed = Feed("9434797373")
        for offset, event in enumerate(hospice_discharge(feed)):
            feed_event(coordinator, table, event, offset)
        partition = partition_for(feed.key, PARTITIONS)
        deliver(coordinator, table, Outgoing(partition, None, Tick(NOW)), offset=0)
        assert sink.rules() == ["hospice-handoff-missed"]


class TestLookBackInTheWorker:
    def test_booking_arriving_before_its_registration_still_raises_repeated_history(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """The worker judges look-back windows by event time like simulate: a booking stamped
        after the registration but consumed first does not hide repeated-history."""
        table: dict[str, Any] = {}
        feed = Feed(keys_in(0)[0])
        gp = feed.adt("A04", "G0001", "2026-02-16 15:33")
        registration = feed.adt("A04", "CM01", "2026-02-23 13:30")
        booking = feed.appointment("S12", "CM01", "2026-02-23 13:31", start="2026-03-01 09:00")
        for offset, event in enumerate((gp, booking, registration)):
            feed_event(coordinator, table, event, offset=offset)
        assert [
            (a.recipients, a.evidence) for _, a in sink.submitted if a.rule == "repeated-history"
        ] == [(("CM01",), ("MSG0002",))]

    def test_a_format_1_patient_state_in_the_table_is_read_and_upgraded(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """A patient state stored by the previous release (latest time per provider) still
        counts as history, and is written back in format 2 after the next event."""
        table: dict[str, Any] = {}
        feed = Feed(keys_in(0)[0])
        feed_event(coordinator, table, feed.adt("A04", "G0001", "2026-02-16 15:33"), offset=0)
        entry = Entry.decode(table[feed.key])
        assert entry.state is not None and entry.state["v"] == 2
        old = dict(entry.state, v=1, seen={p: t[-1] for p, t in entry.state["seen"].items()})
        table[feed.key] = Entry(entry.partition, state=old, applied=entry.applied).encode()
        coordinator.assign(range(PARTITIONS))  # forget the cache: read the table again
        feed_event(coordinator, table, feed.adt("A04", "CM01", "2026-02-23 13:30"), offset=1)
        assert "repeated-history" in sink.rules()
        state = Entry.decode(table[feed.key]).state
        assert state is not None and state["v"] == 2
        assert sorted(state["seen"]) == ["CM01", "G0001"]


def watermark(
    coordinator: Coordinator,
    table: dict[str, Any],
    partition: int,
    offset: int,
    *,
    provider: str,
    at: str,
    received: int = NOW,
    now: int = NOW,
    source: str = "listener-host:4242",
) -> list[Outgoing]:
    """A FeedWatermark record read on ``partition`` of the events topic, then the flush."""
    received_at = from_micros(received)
    value = schemas.codec.encode(
        "carebus.events.FeedWatermark",
        {
            "provider": provider,
            "source": source,
            "event_time": london(at),
            "last_received": received_at,
            "emitted_at": received_at,
        },
    )
    out = coordinator.on_event(table, partition, offset, key=provider, value=value, now=now)
    coordinator.flush(table)
    return out


class Behind:
    """Records what the coordinator reports about providers holding the clock back."""

    def __init__(self) -> None:
        self.reports: list[dict[str, float]] = []

    def set_clock_behind(self, behind: Any) -> None:
        self.reports.append(dict(behind))

    def set_deadlines_pending(self, count: int) -> None:
        pass

    def event_processed(self, event_type: str) -> None:
        pass


class TestLiveClock:
    """The live clock: the feeds' watermarks hold deadlines back, never the wall clock alone."""

    def backlog(self, coordinator: Coordinator, table: dict[str, Any]) -> tuple[Feed, int]:
        """A hospice discharge (deadline 2026-02-13 11:00) read; the hospice's feed is
        behind the deadline though the wall clock is months past it."""
        feed = Feed("9434797373")
        partition = partition_for(feed.key, PARTITIONS)
        for offset, event in enumerate(hospice_discharge(feed)):
            feed_event(coordinator, table, event, offset)
        watermark(coordinator, table, partition, 10, provider="HSP01", at="2026-02-13 08:00")
        watermark(coordinator, table, partition, 11, provider="RX1", at="2026-02-20 09:00")
        return feed, partition

    def test_a_watermark_record_is_not_a_patient_event(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """A FeedWatermark is neither applied to a patient nor skipped as bad input."""
        table: dict[str, Any] = {}
        watermark(coordinator, table, 0, 0, provider="RX1", at="2026-02-13 08:00")
        assert list(table) == [":feed-clock:0"]
        assert coordinator.skipped == 0
        assert sink.submitted == []

    def test_a_backlogged_hospice_admission_still_meets_its_deadline(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """Wall clock past the deadline, hospice watermark behind it: no handoff-missed,
        and the admission that arrives later (event time before the deadline) meets it."""
        table: dict[str, Any] = {}
        feed, partition = self.backlog(coordinator, table)
        for _ in range(3):
            tick(coordinator, table, partition, NOW)
        assert sink.rules() == []
        feed_event(coordinator, table, feed.adt("A01", "HSP01", "2026-02-13 10:00"), 3)
        watermark(coordinator, table, partition, 12, provider="HSP01", at="2026-02-13 10:00")
        tick(coordinator, table, partition, NOW)
        watermark(coordinator, table, partition, 13, provider="HSP01", at="2026-02-14 10:00")
        tick(coordinator, table, partition, NOW)
        assert "hospice-handoff-missed" not in sink.rules()

    def test_the_deadline_fires_once_the_watermark_passes_it(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """No admission came: the handoff is missed when the hospice's watermark passes
        the deadline, raised at the deadline."""
        table: dict[str, Any] = {}
        _, partition = self.backlog(coordinator, table)
        tick(coordinator, table, partition, NOW)
        assert sink.rules() == []
        watermark(coordinator, table, partition, 12, provider="HSP01", at="2026-02-13 11:00")
        tick(coordinator, table, partition, NOW)
        assert sink.rules() == []  # a message stamped at the deadline may still come
        watermark(coordinator, table, partition, 13, provider="HSP01", at="2026-02-13 11:01")
        tick(coordinator, table, partition, NOW)
        assert sink.rules() == ["hospice-handoff-missed"]
        assert sink.submitted[0][1].raised_at == london("2026-02-13 11:00")

    def test_an_idle_provider_stops_holding_the_deadline(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """The hospice sends nothing for feed_idle_minutes: the wall clock fires the deadline."""
        table: dict[str, Any] = {}
        _, partition = self.backlog(coordinator, table)
        tick(coordinator, table, partition, NOW + 299 * SECOND)
        assert sink.rules() == []
        tick(coordinator, table, partition, NOW + 300 * SECOND)
        assert sink.rules() == ["hospice-handoff-missed"]

    def test_another_providers_later_event_does_not_run_past_the_watermark(
        self, coordinator: Coordinator, sink: Sink
    ) -> None:
        """An event of a provider ahead of the others cannot fire the deadline by its time."""
        table: dict[str, Any] = {}
        _, partition = self.backlog(coordinator, table)
        other = Feed(keys_in(partition, 1, prefix="RX1:OTHER")[0])
        feed_event(coordinator, table, other.adt("A01", "RX1", "2026-02-19 09:00"), 4)
        assert "hospice-handoff-missed" not in sink.rules()
        assert coordinator.clocks.get(partition) == to_micros(london("2026-02-13 08:00"))

    def test_the_feed_clock_survives_a_restart(
        self, engine: Engine, coordinator: Coordinator, sink: Sink
    ) -> None:
        """A fresh coordinator over the table holds the deadline back as the old one did."""
        table: dict[str, Any] = {}
        _, partition = self.backlog(coordinator, table)
        tick(coordinator, table, partition, NOW)
        fresh_sink = Sink()
        fresh = Coordinator(engine, fresh_sink, partitions=PARTITIONS)
        fresh.assign(range(PARTITIONS))
        fresh.scan_if_needed(table)
        assert fresh.live_clock(partition, NOW) == coordinator.live_clock(partition, NOW)
        tick(fresh, table, partition, NOW)
        assert fresh_sink.rules() == []
        watermark(fresh, table, partition, 12, provider="HSP01", at="2026-02-14 08:00")
        tick(fresh, table, partition, NOW)
        assert fresh_sink.rules() == ["hospice-handoff-missed"]

    def test_a_malformed_watermark_is_skipped(self, coordinator: Coordinator) -> None:
        """A watermark record that cannot be read counts as skipped; nothing else changes."""
        table: dict[str, Any] = {}
        coordinator.on_watermark(table, 0, 7, {"provider": "RX1"}, NOW)
        assert coordinator.skipped == 1
        assert coordinator.feeds == {}

    def test_a_provider_holding_the_clock_back_raises_one_ops_note(
        self, engine: Engine, sink: Sink
    ) -> None:
        """Held back past clock_behind_alert_s: one ops note and the metric, never an alert."""
        sensors = Behind()
        c = Coordinator(
            engine, sink, partitions=PARTITIONS, sensors=sensors, clock_behind_alert_s=3600
        )
        c.assign(range(PARTITIONS))
        table: dict[str, Any] = {}
        watermark(c, table, 0, 0, provider="HSP01", at="2026-05-31 23:30")
        tick(c, table, 0, NOW)
        assert c.take_ops() == []
        assert sensors.reports[-1] == {"HSP01": 1800.0}
        watermark(c, table, 0, 1, provider="HSP01", at="2026-05-31 22:00")
        watermark(c, table, 0, 2, provider="RX1", at="2026-05-31 23:59")
        tick(c, table, 0, NOW)  # (the older watermark changes nothing: 23:30 stands)
        assert c.take_ops() == []
        later = NOW + 3600 * SECOND
        watermark(c, table, 0, 3, provider="HSP01", at="2026-05-31 23:31", received=later)
        for _ in range(3):
            tick(c, table, 0, later)
        ops = c.take_ops()
        assert [(o["kind"], o["provider"]) for o in ops] == [("clock-held-back", "HSP01")]
        assert ops[0]["behind_s"] == 3600 + 29 * 60
        assert sensors.reports[-1] == {"HSP01": 3600 + 29 * 60}
        assert sink.submitted == []
        watermark(c, table, 0, 4, provider="HSP01", at="2026-06-01 00:59", received=later)
        tick(c, table, 0, later)
        assert [o["kind"] for o in c.take_ops()] == ["clock-caught-up"]
