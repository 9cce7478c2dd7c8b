"""Tests for connectors/translate/referral.py: REF^I12."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.connectors.translate.helpers import (
    NHS_NUMBER,
    msh,
    only,
    pid,
    segment,
    translate_segments,
)

RF1 = "RF1|P^Pending|2WW|MED^Medical|||R000082|20260216110000|||Suspected cancer^Suspected cancer"


class TestReferral:
    def test_fields_from_rf1_and_msh(self) -> None:
        """Priority, type, id, status, effective time and reason from RF1; parties from MSH."""
        event = only(
            translate_segments(
                msh("REF^I12^REF_I12", facility="G0001", receiving="RX1"),
                RF1,
                "PRD|RP|GP^REFERRING||||||G0001",
                "PRD|RT|CONSULTANT^ONC||||||RX1",
                pid(f"{NHS_NUMBER}^^^NHS^NH~MRN0103^^^G0001^MR"),
            )
        )
        assert event.schema == "carebus.events.Referral"
        record = event.record
        assert record["priority"] == "2WW"
        assert record["referral_type"] == "MED"
        assert record["status"] == "P"
        assert record["referral_id"] == "R000082"
        assert record["referrer"] == "G0001"
        assert record["referred_to"] == "RX1"
        assert record["effective_time"] == datetime(2026, 2, 16, 11, tzinfo=UTC)
        assert record["reason"] == "Suspected cancer"
        assert event.key == NHS_NUMBER

    def test_reason_code_when_there_is_no_text(self) -> None:
        """RF1-10 with only a code gives the code as the reason."""
        rf1 = segment("RF1", {1: "A", 2: "R", 10: "CANC"})
        assert only(translate_segments(msh("REF^I12"), rf1, pid())).record["reason"] == "CANC"

    def test_without_rf1_the_referral_fields_are_null(self) -> None:
        """A REF^I12 without RF1 still gives a Referral with the MSH parties."""
        record = only(translate_segments(msh("REF^I12", receiving=""), pid())).record
        assert record["priority"] is None
        assert record["referrer"] == "RX1"
        assert record["referred_to"] is None
