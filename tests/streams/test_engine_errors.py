"""Tests for streams/engine_errors.py and the coordinator's engine-error path."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest

import schemas.codec
from carebus.errors import CarebusError
from carebus.metrics import Metrics
from streams.control import Forwarded, encode, partition_for
from streams.coordinator import Coordinator, Entry
from streams.engine import Engine
from streams.engine_errors import (
    HEADER_PREFIX,
    REPLAYED_HEADER,
    EngineErrorReporter,
    EngineFailure,
    error_headers,
    failure_record,
    replay_record,
    rule_of,
)
from streams.region import Region
from streams.rules import RULES
from streams.rules.base import Rule
from streams.sensors import NullSensors
from streams.view import StreamEvent
from tests.streams.events import Feed
from tests.streams.test_coordinator import NOW, PARTITIONS, Sink, hospice_discharge, keys_in, tick

#: The control id of the one message the faulty rule raises on.
POISON = "POISON01"
#: Patient data in an exception message: must never reach the topic, a log or an alert.
SECRET = "9434797373 Jane Smith"


def _event_boom(view: Any, state: Any, region: Any) -> list[Any]:
    if view.control_id == POISON:
        raise ValueError(f"cannot handle {SECRET}")
    return []


def _deadline_boom(deadline: Any, state: Any, region: Any) -> list[Any]:
    raise KeyError(SECRET)


def faulty_rules() -> list[Rule]:
    """All rules, with identity-unverified raising on POISON and hospice-handoff-missed
    raising on every deadline."""
    out = []
    for rule in RULES:
        if rule.id == "identity-unverified":
            out.append(dataclasses.replace(rule, on_event=_event_boom))
        elif rule.id == "hospice-handoff-missed":
            out.append(dataclasses.replace(rule, on_deadline=_deadline_boom))
        else:
            out.append(rule)
    return out


class Counting(NullSensors):
    def __init__(self) -> None:
        self.errors: list[tuple[str, str | None]] = []
        self.processed = 0

    def engine_error(self, stage: str, rule: str | None) -> None:
        self.errors.append((stage, rule))

    def event_processed(self, event_type: str) -> None:
        self.processed += 1


@pytest.fixture
def sensors() -> Counting:
    return Counting()


@pytest.fixture
def faulty(region: Region, sensors: Counting) -> Coordinator:
    c = Coordinator(Engine(region, faulty_rules()), Sink(), partitions=PARTITIONS, sensors=sensors)
    c.assign(range(PARTITIONS))
    return c


HEADERS = [("carebus-schema", b"carebus.events.Encounter"), ("trace", b"\x00\x01")]


def feed(c: Coordinator, table: dict[str, Any], event: StreamEvent, offset: int) -> bytes:
    value = schemas.codec.encode(event.schema, event.record)
    c.on_event(
        table,
        partition_for(event.key, PARTITIONS),
        offset,
        key=event.key,
        value=value,
        now=NOW,
        headers=HEADERS,
    )
    c.flush(table)
    return value


class TestCoordinatorKeepsFailedEvents:
    def test_event_the_engine_raises_on_is_kept_with_its_record_and_error(
        self, faulty: Coordinator, sensors: Counting
    ) -> None:
        """The failed event's record (value, key, headers, place), rule and error type are kept."""
        table: dict[str, Any] = {}
        f = Feed(keys_in(1)[0])
        value = feed(faulty, table, f.adt("A01", "RX1", "2026-02-09 09:00", control_id=POISON), 4)
        [failure] = faulty.take_failures()
        assert failure.stage == "event"
        assert failure.rule == "identity-unverified"
        assert failure.error == "builtins.ValueError"
        assert failure.message is None
        assert (failure.partition, failure.offset, failure.source) == (1, 4, "e")
        assert failure.key == f.key
        assert failure.value == value
        assert failure.headers == tuple(HEADERS)
        assert sensors.errors == [("event", "identity-unverified")]
        assert faulty.take_failures() == []

    def test_partition_goes_on_after_a_failed_event(
        self, faulty: Coordinator, sensors: Counting
    ) -> None:
        """Later events of the same patient and partition are applied; the failed one is not."""
        table: dict[str, Any] = {}
        f = Feed(keys_in(0)[0])
        feed(faulty, table, f.adt("A01", "RX1", "2026-02-09 09:00", control_id=POISON), 0)
        assert f.key not in table
        feed(faulty, table, f.adt("A03", "RX1", "2026-02-10 09:00"), 1)
        assert Entry.decode(table[f.key]).applied == {"e": 1}
        assert sensors.processed == 1
        assert len(faulty.take_failures()) == 1

    def test_replayed_event_is_applied_once_the_rule_is_fixed(
        self, region: Region, faulty: Coordinator
    ) -> None:
        """The record's value, produced again at a later offset, is applied by a fixed engine."""
        table: dict[str, Any] = {}
        f = Feed(keys_in(0)[0], verified=False)
        feed(faulty, table, f.adt("A01", "RX1", "2026-02-09 09:00", control_id=POISON), 0)
        [failure] = faulty.take_failures()
        sink = Sink()
        fixed = Coordinator(Engine(region), sink, partitions=PARTITIONS)
        fixed.assign(range(PARTITIONS))
        key, value, headers = failure_record(failure, source_topic="t.events", at_ms=1)
        replay = replay_record(key, value, headers, where="t.engine-errors:0:0")
        assert replay is not None
        r_key, r_value, _, r_partition = replay
        assert r_key is not None
        fixed.on_event(
            table, r_partition, 9, key=r_key.decode(), value=r_value, now=NOW, headers=()
        )
        fixed.flush(table)
        assert sink.rules() == ["identity-unverified"]
        assert Entry.decode(table[f.key]).applied == {"e": 9}

    def test_deadline_the_engine_raises_on_is_kept_and_fires_again_after_a_restart(
        self, region: Region, faulty: Coordinator, sensors: Counting
    ) -> None:
        """A failed deadline is recorded (no value) and stays in the table entry to fire later."""
        table: dict[str, Any] = {}
        f = Feed("9434797373")
        for offset, event in enumerate(hospice_discharge(f)):
            feed(faulty, table, event, offset)
        partition = partition_for(f.key, PARTITIONS)
        due = Entry.decode(table[f.key]).next_due
        tick(faulty, table, partition, NOW)
        [failure] = faulty.take_failures()
        assert (failure.stage, failure.rule, failure.error) == (
            "deadline",
            "hospice-handoff-missed",
            "builtins.KeyError",
        )
        assert (failure.offset, failure.value, failure.key) == (-1, b"", f.key)
        assert sensors.errors == [("deadline", "hospice-handoff-missed")]
        assert Entry.decode(table[f.key]).next_due == due
        sink = Sink()
        fixed = Coordinator(Engine(region), sink, partitions=PARTITIONS)
        fixed.assign(range(PARTITIONS))
        fixed.scan_if_needed(table)
        tick(fixed, table, partition, NOW)
        assert sink.rules() == ["hospice-handoff-missed"]

    def test_forwarded_event_failure_names_the_control_topic(self, faulty: Coordinator) -> None:
        """An event forwarded after a merge that fails is kept with source ``c`` and its value."""
        table: dict[str, Any] = {}
        f = Feed(keys_in(0)[0])
        event = f.adt("A01", "RX1", "2026-02-09 09:00", control_id=POISON)
        value = schemas.codec.encode(event.schema, event.record)
        faulty.on_control(table, 0, 5, value=encode(Forwarded(f.key, value, 1)), now=NOW)
        [failure] = faulty.take_failures()
        assert (failure.source, failure.offset, failure.value, failure.key) == (
            "c",
            5,
            value,
            f.key,
        )


class TestRuleOf:
    def test_names_the_rule_whose_code_raised(self, region: Region) -> None:
        """The innermost frame of a rule's function names the rule; others name none."""
        rules = faulty_rules()
        try:
            _event_boom(type("V", (), {"control_id": POISON})(), None, region)
        except ValueError as exc:
            assert rule_of(exc, rules) == "identity-unverified"
        try:
            raise RuntimeError("outside")
        except RuntimeError as exc:
            assert rule_of(exc, rules) is None


def failure(**kw: Any) -> EngineFailure:
    base: dict[str, Any] = dict(
        stage="event",
        rule="repeated-test",
        error="builtins.ValueError",
        message=None,
        partition=3,
        offset=41,
        source="e",
        key="RX1:MRN1",
        value=b"\xc3\x01avro",
        headers=(("carebus-schema", b"carebus.events.Result"),),
    )
    base.update(kw)
    return EngineFailure(**base)


class TestRecord:
    def test_record_holds_the_consumed_record_and_the_error_metadata(self) -> None:
        """Value and key as consumed, original headers first, then the error headers."""
        key, value, headers = failure_record(failure(), source_topic="p.events", at_ms=1234)
        assert (key, value) == (b"RX1:MRN1", b"\xc3\x01avro")
        assert headers[0] == ("carebus-schema", b"carebus.events.Result")
        assert error_headers(headers) == {
            "stage": "event",
            "rule": "repeated-test",
            "error": "builtins.ValueError",
            "topic": "p.events",
            "partition": "3",
            "offset": "41",
            "digest": hashlib.sha256(b"\xc3\x01avro").hexdigest(),
            "at": "1234",
        }

    def test_only_carebus_error_messages_are_kept(self) -> None:
        """A carebus error's message is kept; any other exception's message never is."""
        from streams.engine_errors import describe

        assert describe(ValueError(SECRET)) == ("builtins.ValueError", None)
        assert describe(CarebusError("region has no such provider")) == (
            "carebus.errors.CarebusError",
            "region has no such provider",
        )
        _, _, headers = failure_record(
            failure(message="region has no such provider"), source_topic="t", at_ms=0
        )
        assert error_headers(headers)["message"] == "region has no such provider"

    def test_replay_restores_the_original_record(self) -> None:
        """Replay gives the original key, value, headers and partition, marked as replayed."""
        key, value, headers = failure_record(failure(), source_topic="p.events", at_ms=1)
        replay = replay_record(key, value, headers, where="p.engine-errors:3:7")
        assert replay == (
            b"RX1:MRN1",
            b"\xc3\x01avro",
            [
                ("carebus-schema", b"carebus.events.Result"),
                (REPLAYED_HEADER, b"p.engine-errors:3:7"),
            ],
            3,
        )

    def test_deadline_and_foreign_records_are_not_replayed(self) -> None:
        """A deadline failure (no event) or a record without error headers gives None."""
        d = failure(stage="deadline", offset=-1, value=b"", headers=())
        key, value, headers = failure_record(d, source_topic="p.events", at_ms=1)
        assert replay_record(key, value, headers, where="x") is None
        assert replay_record(b"k", b"v", [("a", b"b")], where="x") is None
        assert not any(n.startswith(HEADER_PREFIX) for n, _ in [("a", b"b")])


class TestPairs:
    def test_consumed_headers_are_read_as_pairs_in_any_form(self) -> None:
        """A list of pairs, a mapping or None give (name, bytes) pairs; None values are empty."""
        from streams.engine_errors import pairs

        assert pairs([("a", b"1"), ("b", None)]) == (("a", b"1"), ("b", b""))
        assert pairs({"a": b"1"}) == (("a", b"1"),)
        assert pairs(None) == ()


class TestOpsAlerts:
    def test_one_alert_per_rule_and_error_per_interval(self) -> None:
        """Repeats within the interval are counted, not alerted; the next alert says how many."""
        reporter = EngineErrorReporter(interval_s=60)
        assert len(reporter.ops_alerts([failure(), failure(), failure(rule="other")], 0)) == 2
        assert reporter.ops_alerts([failure()], 59.9) == []
        [later] = reporter.ops_alerts([failure()], 60)
        body = json.loads(later)
        assert body["kind"] == "engine-error"
        assert body["suppressed_since_last"] == 2
        assert body["rule"] == "repeated-test"

    def test_alert_carries_no_patient_data(self) -> None:
        """The ops alert names rule, error type, partition and digest, never key or value."""
        [raw] = EngineErrorReporter().ops_alerts([failure(key=SECRET, value=SECRET.encode())], 0)
        assert SECRET not in raw.decode()
        assert json.loads(raw)["digest"] == hashlib.sha256(SECRET.encode()).hexdigest()


class TestMetric:
    def test_engine_errors_are_counted_by_stage_and_rule(self) -> None:
        """The worker's counter is labelled by stage and rule (unknown rules fold to other)."""
        m = Metrics(role="worker")
        m.engine_error("event", "repeated-test")
        m.engine_error("deadline", None)
        m.engine_error("event", SECRET)
        text = m.render().decode()
        assert 'carebus_worker_engine_errors_total{rule="repeated-test",stage="event"} 1.0' in text
        assert 'carebus_worker_engine_errors_total{rule="none",stage="deadline"} 1.0' in text
        assert 'carebus_worker_engine_errors_total{rule="other",stage="event"} 1.0' in text
        assert SECRET not in text
