"""Tests for streams/alert.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from streams.alert import Alert
from streams.deadlines import to_micros

AT = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)


def _alert(recipients: list[str], fallback: str = "RX1") -> Alert:
    return Alert.create(
        rule="hospice-handoff-missed",
        patient="9434765919",
        raised_at=to_micros(AT),
        recipients=recipients,
        fallback=fallback,
        dedup_key="hospice-handoff-missed:9434765919:RX1:MSG000123",
        evidence=["MSG000123", "MSG000123"],
        summary="Discharged to hospice 24 h ago; no hospice admission received",
    )


class TestAlert:
    def test_to_json_matches_the_spec_output(self) -> None:
        """to_json is one JSON object with the spec's keys and an ISO 8601 raised_at with offset."""
        assert json.loads(_alert(["RJE", "HSP01"]).to_json()) == {
            "rule": "hospice-handoff-missed",
            "patient": "9434765919",
            "raised_at": "2026-03-02T14:05:00+00:00",
            "recipients": ["HSP01", "RJE"],
            "dedup_key": "hospice-handoff-missed:9434765919:RX1:MSG000123",
            "evidence": ["MSG000123"],
            "summary": "Discharged to hospice 24 h ago; no hospice admission received",
        }

    def test_to_json_is_json_dumps_of_to_dict(self) -> None:
        """The fast serialiser writes exactly what json.dumps would, escapes included."""
        alert = Alert.create(
            rule="repeated-test",
            patient='RX1:MRN"7\\é',
            raised_at=to_micros(AT) + 123,
            recipients=["R\u00e9X", "G1"],
            fallback="RX1",
            dedup_key="k\n",
            evidence=["a", "b"],
            summary='Test 4548-4 ordered; "quoted"',
        )
        assert alert.to_json() == json.dumps(alert.to_dict())

    def test_recipients_are_sorted_and_unique(self) -> None:
        """Duplicate and empty recipient codes collapse to a sorted unique tuple."""
        assert _alert(["RX1", "G0001", "RX1", ""]).recipients == ("G0001", "RX1")

    def test_no_recipients_falls_back_to_the_sender(self) -> None:
        """With nobody else to tell the alert goes to the fallback (sending) provider."""
        assert _alert([], fallback="RX9").recipients == ("RX9",)

    def test_raised_at_may_be_micros_or_the_event_datetime(self) -> None:
        """create takes epoch microseconds or an aware datetime; one instant, one alert."""
        from_datetime = Alert.create(
            rule="r",
            patient="p",
            raised_at=AT.astimezone(timezone(timedelta(hours=1))),
            recipients=["RX1"],
            fallback="RX1",
            dedup_key="k",
            evidence=["M1"],
            summary="",
        )
        from_micros = Alert.create(
            rule="r",
            patient="p",
            raised_at=to_micros(AT),
            recipients=["RX1"],
            fallback="RX1",
            dedup_key="k",
            evidence=["M1"],
            summary="",
        )
        assert from_micros.raised_at == AT
        assert from_datetime == from_micros
        assert from_datetime.to_json() == from_micros.to_json()

    def test_an_alert_without_recipients_cannot_exist(self) -> None:
        """Constructing an Alert with no recipients is refused."""
        with pytest.raises(ValueError, match="no recipients"):
            Alert("r", "p", AT, (), "k", (), "")

    def test_naive_raised_at_is_refused(self) -> None:
        """raised_at must carry a UTC offset."""
        with pytest.raises(ValueError, match="naive"):
            Alert("r", "p", datetime(2026, 1, 1), ("RX1",), "k", (), "")

    def test_from_dict_inverts_to_dict(self) -> None:
        """An alert read back from its JSON form is equal to the original."""
        alert = _alert(["RJE", "HSP01"])
        assert Alert.from_dict(json.loads(alert.to_json())) == alert

    def test_raised_at_is_rendered_in_utc(self) -> None:
        """A raised_at in another offset is written as the same instant in UTC."""
        other = timezone(timedelta(hours=1))
        alert = Alert("r", "p", AT.astimezone(other), ("RX1",), "k", (), "")
        assert alert.to_dict()["raised_at"] == "2026-03-02T14:05:00+00:00"
