"""Tests for streams/status.py: folding alert and status-change records."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas.codec
from streams.app import fold_status
from streams.status import (
    ALERT,
    CHANGE,
    RANK,
    BadStatusRecord,
    apply,
    body_key,
    dominated,
    reassert,
)

KEY = "death-notified:9434765919:HSP01:MSG0001"


def raised() -> dict[str, Any]:
    return {
        "rule": "death-notified",
        "patient": "9434765919",
        "raised_at": datetime(2026, 2, 19, 9, 0, tzinfo=UTC),
        "recipients": ["G0001", "RX1"],
        "dedup_key": KEY,
        "evidence": ["MSG0001"],
        "summary": "Patient died",
    }


def change(
    action: str, by: str = "ann", minute: int = 0, note: str | None = None
) -> dict[str, Any]:
    return {
        "dedup_key": KEY,
        "action": action,
        "by": by,
        "at": datetime(2026, 2, 19, 10, minute, tzinfo=UTC),
        "note": note,
    }


class TestApply:
    def test_a_raised_alert_is_open(self) -> None:
        """The worker's alert record makes the status OPEN, with the alert's details."""
        status = apply(None, KEY, ALERT, raised())
        assert status is not None
        assert status["status"] == "OPEN"
        assert status["alert"]["raised_at"] == "2026-02-19T09:00:00+00:00"
        assert status["history"] == []

    def test_acknowledge_then_resolve(self) -> None:
        """Acknowledged, then resolved; the history keeps both."""
        status = apply(None, KEY, ALERT, raised())
        status = apply(status, KEY, CHANGE, change("ACKNOWLEDGED", note="on it"))
        assert status is not None and status["status"] == "ACKNOWLEDGED"
        status = apply(status, KEY, CHANGE, change("RESOLVED", minute=5))
        assert status is not None and status["status"] == "RESOLVED"
        assert [h["action"] for h in status["history"]] == ["ACKNOWLEDGED", "RESOLVED"]
        assert status["history"][0]["note"] == "on it"

    def test_resolved_is_final(self) -> None:
        """An acknowledgement after resolution is recorded but does not reopen the alert."""
        status = apply(None, KEY, CHANGE, change("RESOLVED"))
        status = apply(status, KEY, CHANGE, change("ACKNOWLEDGED", minute=9))
        assert status is not None and status["status"] == "RESOLVED"
        assert len(status["history"]) == 2

    def test_applying_the_same_record_twice_changes_nothing(self) -> None:
        """Reprocessed records return None (no table write)."""
        status = apply(None, KEY, ALERT, raised())
        status = apply(status, KEY, CHANGE, change("ACKNOWLEDGED"))
        assert apply(status, KEY, CHANGE, change("ACKNOWLEDGED")) is None
        assert apply(status, KEY, ALERT, raised()) is None

    def test_a_change_before_the_alert_is_known(self) -> None:
        """A status change for an alert not yet seen keeps the change; the alert fills in later."""
        status = apply(None, KEY, CHANGE, change("ACKNOWLEDGED"))
        assert status is not None and status["alert"] is None
        assert status["status"] == "ACKNOWLEDGED"
        status = apply(status, KEY, ALERT, raised())
        assert status is not None and status["alert"]["rule"] == "death-notified"
        assert status["status"] == "ACKNOWLEDGED"

    def test_rejects_records_of_another_key_or_schema(self) -> None:
        """A record whose dedup key is not its Kafka key, or of another schema, is refused."""
        with pytest.raises(BadStatusRecord):
            apply(None, "other-key", CHANGE, change("ACKNOWLEDGED"))
        with pytest.raises(BadStatusRecord):
            apply(None, KEY, "carebus.events.Encounter", raised())


class TestBodyKey:
    def test_alert_body_keyed_apart_is_folded_into_its_alert(self) -> None:
        """An alert body keyed ``{dedup_key}/alert`` folds into the dedup key's status."""
        status = apply(None, body_key(KEY), ALERT, raised())
        assert status is not None and status["dedup_key"] == KEY
        assert status["status"] == "OPEN"

    def test_a_change_must_be_keyed_by_its_dedup_key(self) -> None:
        """A status change keyed like a body is refused (only bodies carry the suffix)."""
        with pytest.raises(BadStatusRecord):
            apply(None, body_key(KEY), CHANGE, change("RESOLVED"))

    def test_first_release_value_is_still_read(self) -> None:
        """A table value without ``decisive`` folds, and its decisive change is found."""
        old = {
            "v": 1,
            "dedup_key": KEY,
            "status": "RESOLVED",
            "alert": None,
            "history": [
                {"action": "RESOLVED", "by": "ann", "at": "2026-02-19T10:00:00+00:00", "note": None}
            ],
        }
        assert apply(old, KEY, CHANGE, change("ACKNOWLEDGED", minute=3))["status"] == "RESOLVED"
        again = reassert(old)
        assert again is not None and again["action"] == "RESOLVED"
        assert again["at"] == datetime(2026, 2, 19, 10, 0, tzinfo=UTC)


def records() -> list[tuple[str, str, dict[str, Any]]]:
    """(Kafka key, schema, record): a raise, two acks, two resolves, and their repeats."""
    return [
        (body_key(KEY), ALERT, raised()),
        (KEY, CHANGE, change("ACKNOWLEDGED", by="ann", minute=1)),
        (KEY, CHANGE, change("RESOLVED", by="bob", minute=2)),
        (KEY, CHANGE, change("ACKNOWLEDGED", by="cat", minute=3)),
        (KEY, CHANGE, change("RESOLVED", by="dan", minute=4)),
    ]


def fold(sequence: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any] | None:
    status = None
    for key, schema, record in sequence:
        status = apply(status, key, schema, record) or status
    return status


def expected(sequence: list[tuple[str, str, dict[str, Any]]]) -> str:
    """The highest status any record of ``sequence`` gives."""
    ranks = [RANK["OPEN"] if s == ALERT else RANK[r["action"]] for _, s, r in sequence]
    return {rank: name for name, rank in RANK.items()}[max(ranks)]


class TestMonotonic:
    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(range(5)), min_size=1, max_size=12))
    def test_status_is_the_highest_any_record_gives_in_any_order(self, picks: list[int]) -> None:
        """Any order, with repeats: the status is the join of the records' statuses."""
        sequence = [records()[i] for i in picks]
        status = fold(sequence)
        assert status is not None
        assert status["status"] == expected(sequence)
        assert {h["by"] for h in status["history"]} == {
            r["by"] for _, s, r in sequence if s == CHANGE
        }

    @settings(max_examples=300, deadline=None)
    @given(st.permutations(range(5)), st.lists(st.sampled_from(range(5)), max_size=6))
    def test_a_replay_never_moves_a_status_back(
        self, order: list[int], replayed: list[int]
    ) -> None:
        """After every record, then any of them again, the status never went down."""
        status = None
        seen = []
        for i in [*order, *replayed]:
            key, schema, record = records()[i]
            new = apply(status, key, schema, record)
            if new is not None:
                assert RANK[new["status"]] >= RANK[(status or {"status": "UNKNOWN"})["status"]]
                status = new
            seen.append(status["status"] if status else "UNKNOWN")
        assert seen[-1] == "RESOLVED"
        assert all(RANK[a] <= RANK[b] for a, b in pairwise(seen))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(range(5)), min_size=1, max_size=12))
    def test_the_compacted_topic_gives_the_same_status(self, picks: list[int]) -> None:
        """The records written, plus the worker's reasserts, compacted (last per key) and
        folded into a fresh table, give the status the live table had."""
        table: dict[str, Any] = {}
        log: list[tuple[bytes, bytes]] = []
        for i in picks:
            key, schema, record = records()[i]
            log.append((key.encode(), schemas.codec.encode(schema, record)))
            offset = len(log) - 1
            again = fold_status(table, *log[offset], offset)
            while again is not None:  # the worker writes it, and reads it back
                log.append((key.encode(), again))
                again = fold_status(table, *log[-1], len(log) - 1)
        compacted = dict(log)  # the last record of each key (dict keeps the last)
        fresh: dict[str, Any] = {}
        for offset, (key, value) in enumerate(compacted.items()):
            fold_status(fresh, key, value, offset)
        assert fresh[KEY]["status"] == table[KEY]["status"]

    def test_a_late_acknowledgement_of_a_resolved_alert_is_dominated(self) -> None:
        """An acknowledgement ranks below a resolved status; the resolution is reasserted."""
        status = apply(None, KEY, CHANGE, change("RESOLVED", by="bob"))
        assert dominated(status, CHANGE, change("ACKNOWLEDGED", minute=9))
        assert not dominated(status, CHANGE, change("RESOLVED", by="eve"))
        assert not dominated(status, ALERT, raised())
        assert reassert(status) == change("RESOLVED", by="bob")
