"""Tests for connectors/translate/__init__.py: translate(), the table, rejections, death."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carebus.errors import (
    InvalidIdentifier,
    MessageRejected,
    MissingRequiredField,
    UnsupportedMessageType,
)
from connectors.translate import TRANSLATORS, Event
from tests.connectors.translate.helpers import (
    NHS_NUMBER,
    evn,
    message,
    msh,
    only,
    pid,
    segment,
    translate_raw,
    translate_segments,
)

PV1 = segment("PV1", {1: "1", 2: "I", 3: "WARD7^^^RX1", 19: "V1"})


def _schemas(events: list[Event]) -> list[str]:
    return [e.schema.rsplit(".", 1)[1] for e in events]


class TestTable:
    def test_translates_exactly_the_documented_message_types(self) -> None:
        """The table covers the message types and triggers of docs/architecture.md, no more."""
        expected = (
            {
                ("ADT", t)
                for t in [
                    "A01",
                    "A02",
                    "A03",
                    "A04",
                    "A05",
                    "A11",
                    "A12",
                    "A13",
                    "A08",
                    "A28",
                    "A31",
                    "A40",
                ]
            }
            | {("REF", "I12"), ("ORM", "O01"), ("OML", "O21"), ("ORU", "R01")}
            | {("SIU", t) for t in ["S12", "S13", "S14", "S15", "S17", "S26"]}
            | {("MDM", f"T{n:02d}") for n in range(1, 12)}
            | {("PPR", t) for t in ["PC1", "PC2", "PC3"]}
        )
        assert set(TRANSLATORS) == expected


class TestRejections:
    def _reject(self, *segments: str) -> MessageRejected:
        with pytest.raises(MessageRejected) as info:
            translate_segments(*segments)
        return info.value

    def test_unsupported_message_type(self) -> None:
        """A type or trigger not in the table is UnsupportedMessageType, with the control id."""
        exc = self._reject(msh("ADT^A06"), evn(), pid())
        assert isinstance(exc, UnsupportedMessageType)
        assert exc.reason == "unsupported-message-type"
        assert exc.control_id == "MSG000001"
        assert "ADT^A06" in exc.detail

    def test_missing_control_id(self) -> None:
        """No MSH-10 is MissingRequiredField without a control id."""
        exc = self._reject(msh("ADT^A08", control_id=""), evn(), pid())
        assert isinstance(exc, MissingRequiredField)
        assert (exc.field, exc.control_id) == ("MSH-10", None)

    @pytest.mark.parametrize("message_type", ["", "ADT", "^A01"])
    def test_missing_message_type(self, message_type: str) -> None:
        """No MSH-9.1 or trigger (MSH-9.2, else EVN-1) is MissingRequiredField MSH-9."""
        exc = self._reject(msh(message_type), pid())
        assert isinstance(exc, MissingRequiredField)
        assert (exc.field, exc.control_id) == ("MSH-9", "MSG000001")

    def test_trigger_falls_back_to_evn_1(self) -> None:
        """A v2.2-style MSH-9 without trigger takes the trigger from EVN-1."""
        event = only(
            translate_segments(msh("ADT"), segment("EVN", {1: "A08", 2: "20260209"}), pid())
        )
        assert event.record["header"]["trigger_event"] == "A08"

    def test_missing_sending_facility(self) -> None:
        """No MSH-4 is MissingRequiredField MSH-4."""
        exc = self._reject(msh("ADT^A08", facility=""), evn(), pid())
        assert isinstance(exc, MissingRequiredField)
        assert exc.field == "MSH-4"

    @pytest.mark.parametrize("time", ["", "2026-02-09", "20261399"])
    def test_missing_or_unreadable_message_time(self, time: str) -> None:
        """An empty or unreadable MSH-7 is MissingRequiredField MSH-7."""
        exc = self._reject(msh("ADT^A08", time=time), evn(), pid())
        assert isinstance(exc, MissingRequiredField)
        assert (exc.field, exc.control_id) == ("MSH-7", "MSG000001")

    def test_missing_pid(self) -> None:
        """A message without a PID is MissingRequiredField PID."""
        exc = self._reject(msh("ADT^A01"), evn(), PV1)
        assert isinstance(exc, MissingRequiredField)
        assert exc.field == "PID"

    def test_no_identifier(self) -> None:
        """A PID without any PID-3 value is InvalidIdentifier."""
        exc = self._reject(msh("ADT^A01"), evn(), pid(""), PV1)
        assert isinstance(exc, InvalidIdentifier)
        assert exc.reason == "invalid-identifier"

    @pytest.mark.parametrize(
        "segments",
        [
            (msh("ADT^A08", time="TESTER"), pid()),
            (msh("ADT^A08"), evn("TESTER19450312"), pid()),
            (msh("ADT^A08"), pid("^^^NHS^NH", f5="TESTER^PAT")),
            (msh("SIU^S12"), pid(), segment("SCH", {1: "TESTER"})),
        ],
    )
    def test_rejections_carry_no_patient_data(self, segments: tuple[str, ...]) -> None:
        """Rejection messages name fields, never values from the message."""
        exc = self._reject(*segments)
        text = f"{exc} {exc.detail} {exc.field}"
        for value in ("TESTER", NHS_NUMBER, "19450312", "HIGH ST"):
            assert value not in text


class TestDeath:
    def test_death_indicator_adds_patient_died_after_the_family_event(self) -> None:
        """PID-30 = Y gives the family event, then PatientDied at the event time."""
        events = translate_segments(msh("ADT^A08"), evn("20260219090000"), pid(f30="Y"))
        assert _schemas(events) == ["PatientDemographics", "PatientDied"]
        died = events[1].record
        assert died["evidence"] == ["DEATH_INDICATOR"]
        assert died["death_time"] == datetime(2026, 2, 19, 9, tzinfo=UTC)
        assert died["patient"] == events[0].record["patient"]
        assert events[1].key == NHS_NUMBER
        assert died["header"]["event_id"] != events[0].record["header"]["event_id"]

    def test_death_time_is_pid_29(self) -> None:
        """A PID-29 value is the time of death, and evidence on its own."""
        events = translate_segments(msh("ADT^A08"), evn(), pid(f29="20260218230000"))
        assert events[1].record["evidence"] == ["DEATH_TIME"]
        assert events[1].record["death_time"] == datetime(2026, 2, 18, 23, tzinfo=UTC)

    def test_discharge_to_79_shows_death(self) -> None:
        """ADT^A03 with PV1-37.1 = 79 (died) gives PatientDied at the event time."""
        pv1 = segment("PV1", {1: "1", 2: "I", 37: "79"})
        events = translate_segments(msh("ADT^A03"), evn("20260212110000"), pid(), pv1)
        assert _schemas(events) == ["Encounter", "PatientDied"]
        assert events[1].record["evidence"] == ["DISCHARGE_DESTINATION"]
        assert events[1].record["death_time"] == datetime(2026, 2, 12, 11, tzinfo=UTC)

    def test_79_outside_a_discharge_shows_nothing(self) -> None:
        """PV1-37.1 = 79 on an ADT^A08 is not a death."""
        pv1 = segment("PV1", {1: "1", 37: "79"})
        assert _schemas(translate_segments(msh("ADT^A08"), evn(), pid(), pv1)) == [
            "PatientDemographics"
        ]

    def test_all_evidence_is_listed(self) -> None:
        """Every kind of evidence in one message is listed, in a fixed order."""
        pv1 = segment("PV1", {1: "1", 37: "79"})
        events = translate_segments(msh("ADT^A03"), evn(), pid(f29="20260211", f30="Y"), pv1)
        assert events[1].record["evidence"] == [
            "DEATH_INDICATOR",
            "DEATH_TIME",
            "DISCHARGE_DESTINATION",
        ]

    @pytest.mark.parametrize("extra", [{"f30": "N"}, {"f29": '""'}, {"f30": '""'}])
    def test_no_death_without_evidence(self, extra: dict[str, str]) -> None:
        """PID-30 = N and HL7 nulls in PID-29/30 do not show a death."""
        assert _schemas(translate_segments(msh("ADT^A08"), evn(), pid(**extra))) == [
            "PatientDemographics"
        ]

    def test_unreadable_death_time_falls_back_to_the_event_time(self) -> None:
        """A non-empty but unreadable PID-29 still shows death, at the event time."""
        events = translate_segments(msh("ADT^A08"), evn("20260219090000"), pid(f29="soon"))
        assert events[1].record["death_time"] == datetime(2026, 2, 19, 9, tzinfo=UTC)
        assert events[0].record["patient"]["death_time"] is None


class TestMessageForms:
    def test_v23_message(self) -> None:
        """An HL7 2.3 ADT^A01 (no MSH-9.3) translates, recording its version."""
        event = only(translate_segments(msh("ADT^A01", version="2.3"), evn(), pid(), PV1))
        assert event.record["header"]["hl7_version"] == "2.3"
        assert event.record["kind"] == "ADMITTED"

    def test_v251_message(self) -> None:
        """An HL7 2.5.1 message with HD authorities and offsets translates."""
        text = [
            "MSH|^~\\&|EPR^1.2.3^ISO|RX1^2.16.840.1.1^ISO|CAREBUS|G0001|20260709090000+0100||"
            "ADT^A04^ADT_A01|C251|P|2.5.1",
            "EVN||20260709090000+0100",
            pid(f"{NHS_NUMBER}^^^NHS&2.16.840.1.113883.2.1.4.1&ISO^NH"),
            PV1,
        ]
        event = only(translate_segments(*text))
        header = event.record["header"]
        assert header["hl7_version"] == "2.5.1"
        assert header["sending_facility"] == "RX1"
        assert header["sending_application"] == "EPR"
        assert header["event_time"] == datetime(2026, 7, 9, 8, tzinfo=UTC)
        assert event.key == NHS_NUMBER

    @pytest.mark.parametrize("terminator", ["\r", "\n", "\r\n"])
    @pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
    def test_line_endings_and_bom_do_not_change_the_events(
        self, terminator: str, bom: bytes
    ) -> None:
        """CR, LF or CRLF segment ends and a UTF-8 BOM give the same records but the raw hash."""
        segments = (msh("ADT^A01"), evn(), pid(), PV1)
        reference = only(translate_raw(message(*segments)))
        raw = bom + terminator.join(segments).encode() + terminator.encode()
        event = only(translate_raw(raw))
        strip = {"raw_sha256": None, "event_id": None}
        assert {**event.record["header"], **strip} == {**reference.record["header"], **strip}
        assert event.record["patient"] == reference.record["patient"]

    def test_escapes_and_custom_delimiters(self) -> None:
        """Values are unescaped, and delimiters are read from MSH-1/MSH-2, not assumed."""
        text = [
            "MSH#:*!@#EPR#RX1#CAREBUS#G0001#20260209090000##ADT:A08#C1#P#2.4",
            "PID#1##9434765919:::NHS:NH*MRN1:::RX1:MR##O!F!BRIEN:SEAN##19450312#M",
        ]
        patient = only(translate_segments(*text)).record["patient"]
        assert patient["key"] == NHS_NUMBER
        assert [i["value"] for i in patient["identifiers"]] == [NHS_NUMBER, "MRN1"]
        assert patient["demographics"]["family_name"] == "O#BRIEN"

    def test_latin1_fallback(self) -> None:
        """A non-UTF-8 byte (ISO 8859-1) in a name is decoded by the fallback charset."""
        raw = message(msh("ADT^A08"), evn(), pid()).replace(b"TESTER", "ZOË".encode("latin-1"))
        patient = only(translate_raw(raw)).record["patient"]
        assert patient["demographics"]["family_name"] == "ZOË"

    def test_received_time_is_taken_as_given(self) -> None:
        """received_time is the caller's (truncated to milliseconds), not the clock's."""
        event = only(translate_segments(msh("ADT^A08"), evn(), pid()))
        assert event.record["header"]["received_time"] == datetime(
            2026, 2, 9, 9, 0, 5, 123000, tzinfo=UTC
        )
