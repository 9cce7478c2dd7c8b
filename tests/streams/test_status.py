"""Tests for streams/status.py: folding alert and status-change records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streams.status import ALERT, CHANGE, BadStatusRecord, apply

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
