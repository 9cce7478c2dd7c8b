"""Tests for connectors/translate/common.py: patient key, identifiers, demographics, header."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest

from carebus.errors import InvalidIdentifier, MissingRequiredField
from connectors.hl7 import Layout, parse_message
from connectors.translate import common
from connectors.translate.common import (
    EVENT_ID_NAMESPACE,
    PD1,
    PID,
    Context,
    event_id,
    read,
    texts,
)
from tests.connectors.translate.helpers import (
    NHS_NUMBER,
    RECEIVED,
    evn,
    msh,
    only,
    pid,
    segment,
    translate_segments,
)

A08 = msh("ADT^A08^ADT_A01")


def patient_of(pid_segment: str, *more: str, header: str = A08) -> Any:
    return translate_segments(header, evn(), pid_segment, *more)[0].record["patient"]


class TestPatientKey:
    def test_valid_nhs_number_is_the_key(self) -> None:
        """An NHS repetition (authority NHS, type NH) passing modulus 11 is the key."""
        patient = patient_of(pid())
        assert patient["key"] == NHS_NUMBER
        assert patient["nhs_number"] == NHS_NUMBER

    @pytest.mark.parametrize("pid3", [f"{NHS_NUMBER}^^^NHS", f"{NHS_NUMBER}^^^^NH"])
    def test_authority_or_type_alone_marks_an_nhs_number(self, pid3: str) -> None:
        """Either CX.4 = NHS or CX.5 = NH is enough to make a repetition an NHS number."""
        assert patient_of(pid(pid3))["nhs_number"] == NHS_NUMBER

    def test_a_later_valid_nhs_repetition_still_wins(self) -> None:
        """The NHS number is the key even when a local identifier comes first."""
        patient = patient_of(pid(f"MRN0101^^^RX1^MR~{NHS_NUMBER}^^^NHS^NH"))
        assert patient["key"] == NHS_NUMBER

    def test_failing_nhs_number_falls_back_to_the_local_identifier(self) -> None:
        """With no valid NHS number, the key is AUTHORITY:ID of the first other repetition."""
        patient = patient_of(pid("9434765918^^^NHS^NH~MRN0101^^^RX1^MR~X9^^^OTHER^MR"))
        assert patient["key"] == "RX1:MRN0101"
        assert patient["nhs_number"] is None

    def test_empty_authority_uses_the_sending_facility(self) -> None:
        """A local identifier without CX.4 takes the sending facility (MSH-4.1)."""
        patient = patient_of(pid("MRN0101^^^^MR"), header=msh("ADT^A08", facility="RJE"))
        assert patient["key"] == "RJE:MRN0101"

    def test_authority_with_subcomponents_uses_the_namespace(self) -> None:
        """CX.4 given as namespace&OID&ISO keys by its first sub-component."""
        patient = patient_of(pid("P1^^^RX1&2.16.840.1.1&ISO^MR"))
        assert patient["key"] == "RX1:P1"
        assert patient["identifiers"][0]["authority"] == "RX1"

    def test_a_ten_digit_local_identifier_is_not_an_nhs_number(self) -> None:
        """A valid-looking number without NHS authority or NH type is a local identifier."""
        patient = patient_of(pid(f"{NHS_NUMBER}^^^NHSNBR^NHSNMBR"))
        assert patient["key"] == f"NHSNBR:{NHS_NUMBER}"
        assert patient["nhs_number"] is None

    def test_only_failing_nhs_numbers_key_by_the_first(self) -> None:
        """When every repetition is a failing NHS number, the key is NHS:ID of the first."""
        patient = patient_of(pid("9434765918^^^NHS^NH~9434765917^^^NHS^NH"))
        assert patient["key"] == "NHS:9434765918"

    def test_empty_repetitions_are_skipped(self) -> None:
        """Empty or HL7-null repetitions neither count nor appear in identifiers."""
        patient = patient_of(pid(f'~""^^^X~{NHS_NUMBER}^^^NHS^NH'))
        assert patient["key"] == NHS_NUMBER
        assert len(patient["identifiers"]) == 1

    @pytest.mark.parametrize("pid3", ["", "^^^NHS^NH", '""', "~"])
    def test_no_identifier_value_is_rejected(self, pid3: str) -> None:
        """A PID-3 without any value is an InvalidIdentifier rejection with the control id."""
        with pytest.raises(InvalidIdentifier) as info:
            translate_segments(A08, evn(), pid(pid3))
        assert info.value.control_id == "MSG000001"
        assert info.value.field == "PID-3"


class TestIdentifiers:
    def test_every_repetition_is_listed_in_order(self) -> None:
        """identifiers lists each repetition's value, authority, type and NHS validity."""
        patient = patient_of(pid(f"{NHS_NUMBER}^^^NHS^NH~MRN0101^^^RX1^MR~9434765918^^^NHS^NH"))
        assert patient["identifiers"] == [
            {"value": NHS_NUMBER, "authority": "NHS", "type_code": "NH", "valid_nhs_number": True},
            {"value": "MRN0101", "authority": "RX1", "type_code": "MR", "valid_nhs_number": False},
            {
                "value": "9434765918",
                "authority": "NHS",
                "type_code": "NH",
                "valid_nhs_number": False,
            },
        ]

    def test_escaped_values_are_unescaped(self) -> None:
        """Escape sequences in identifiers are resolved (\\T\\ is the sub-component character)."""
        patient = patient_of(pid(r"A\T\B^^^RX1^MR"))
        assert patient["identifiers"][0]["value"] == "A&B"
        assert patient["key"] == "RX1:A&B"


class TestPatientFields:
    def test_demographics(self) -> None:
        """Name, birth date, sex and address come from PID; GP practice and GP from PD1."""
        pd1 = segment("PD1", {3: "EXAMPLE SURGERY^^M83001", 4: "G1234567^SMITH^JOHN"})
        demographics = patient_of(pid(), pd1)["demographics"]
        assert demographics == {
            "family_name": "TESTER",
            "given_names": ["PAT", "ANN"],
            "title": "MRS",
            "birth_date": date(1945, 3, 12),
            "sex": "F",
            "address": {
                "lines": ["1 HIGH ST", "FLAT 2"],
                "city": "STOKE-ON-TRENT",
                "county": "STAFFS",
                "postcode": "ST4 1AA",
                "country": "GBR",
            },
            "registered_gp": "M83001",
            "registered_gp_practitioner": "G1234567",
        }

    def test_practice_code_from_xon_10_in_later_versions(self) -> None:
        """Without PD1-3.3 the practice code is PD1-3.10 (the organisation identifier)."""
        pd1 = segment("PD1", {3: "EXAMPLE SURGERY^^^^^^^^^M83001"})
        assert patient_of(pid(), pd1)["demographics"]["registered_gp"] == "M83001"

    def test_missing_parts_are_null(self) -> None:
        """A PID with only identifiers gives null name parts, no address, no birth date."""
        demographics = patient_of(segment("PID", {3: f"{NHS_NUMBER}^^^NHS^NH"}))["demographics"]
        assert demographics["family_name"] is None
        assert demographics["given_names"] == []
        assert demographics["address"] is None
        assert demographics["birth_date"] is None
        assert demographics["registered_gp"] is None

    def test_repetitions_take_the_first(self) -> None:
        """Repeated names and addresses give the first repetition."""
        demographics = patient_of(
            pid(f5="FIRST^ONE~SECOND^TWO", f11="1 A ST^^TOWN^^AA1 1AA~2 B ST^^CITY^^BB2 2BB")
        )["demographics"]
        assert demographics["family_name"] == "FIRST"
        assert demographics["address"]["postcode"] == "AA1 1AA"

    def test_unreadable_birth_date_is_null(self) -> None:
        """A birth date that is not a day-precision date is null rather than a rejection."""
        assert patient_of(pid(f7="1945"))["demographics"]["birth_date"] is None

    def test_nhs_number_status_and_death_fields(self) -> None:
        """PID-32 is the NHS number status; PID-29/30 give death time and indicator."""
        patient = patient_of(pid(f29="20260218230000", f30="Y", f32="01"))
        assert patient["nhs_number_status"] == "01"
        assert patient["death_time"] == datetime(2026, 2, 18, 23, tzinfo=UTC)
        assert patient["death_indicator"] is True

    @pytest.mark.parametrize(("indicator", "expected"), [("N", False), ("", None), ('""', None)])
    def test_death_indicator_values(self, indicator: str, expected: bool | None) -> None:
        """PID-30 N is false; empty or HL7 null is unknown."""
        assert patient_of(pid(f30=indicator))["death_indicator"] is expected


class TestPatientMemo:
    """Patient records are memoised by PID text: nothing else may leak between messages."""

    def test_local_key_follows_the_sending_facility_of_each_message(self) -> None:
        """The same PID from two senders keys a local id without authority by each sender."""
        local = pid("MRN0101^^^^MR")
        first = patient_of(local, header=msh("ADT^A08", facility="RJE"))
        second = patient_of(local, header=msh("ADT^A08", facility="RX1"))
        assert (first["key"], second["key"]) == ("RJE:MRN0101", "RX1:MRN0101")

    def test_nhs_number_key_is_shared_by_senders(self) -> None:
        """A PID keyed by its NHS number gives the same record whoever sends it."""
        first = patient_of(pid(), header=msh("ADT^A08", facility="RJE"))
        second = patient_of(pid(), header=msh("ADT^A08", facility="RX1"))
        assert first == second
        assert first["key"] == NHS_NUMBER

    def test_pd1_is_part_of_the_record(self) -> None:
        """The same PID with another PD1 gives that PD1's practice."""
        first = patient_of(pid(), "PD1|||PRACTICE^^B86001")
        second = patient_of(pid(), "PD1|||PRACTICE^^B86002")
        third = patient_of(pid())
        gps = [p["demographics"]["registered_gp"] for p in (first, second, third)]
        assert gps == ["B86001", "B86002", None]

    def test_escaped_bytes_follow_each_message_character_set(self) -> None:
        """A PID with an \\X escape decodes by its own message's MSH-18."""
        escaped = pid(f5="\\XC3A9\\^PAT")
        header = msh("ADT^A08") + "||"  # MSH-17 empty, MSH-18 next
        utf8 = patient_of(escaped, header=header + "UNICODE UTF-8")
        latin = patient_of(escaped, header=header + "8859/1")
        again = patient_of(escaped, header=header + "UNICODE UTF-8")
        names = [p["demographics"]["family_name"] for p in (utf8, latin, again)]
        assert names == ["\u00e9", "\u00c3\u00a9", "\u00e9"]

    def test_a_full_memo_forgets_its_older_half(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """When the memo is full the older half goes; the records stay the same."""
        monkeypatch.setattr(common, "_PATIENTS", {})
        monkeypatch.setattr(common, "_PATIENTS_MAX", 4)
        pids = [pid(f"MRN{n}^^^RX1^MR") for n in range(5)]
        first = [patient_of(text) for text in pids]
        kept = [key.split("|")[3] for key in common._PATIENTS]
        assert kept == ["MRN2^^^RX1^MR", "MRN3^^^RX1^MR", "MRN4^^^RX1^MR"]
        assert [patient_of(text) for text in pids] == first

    def test_discharge_death_does_not_stick_to_the_patient(self) -> None:
        """A discharge to death (PV1-37 79) adds evidence for that message only."""
        died = translate_segments(
            msh("ADT^A03", control_id="C1"), evn(), pid(), segment("PV1", {2: "I", 37: "79"})
        )
        later = translate_segments(msh("ADT^A08", control_id="C2"), evn(), pid())
        assert [e.schema for e in died][-1] == "carebus.events.PatientDied"
        assert died[-1].record["evidence"] == ["DISCHARGE_DESTINATION"]
        assert [e.schema for e in later] == ["carebus.events.PatientDemographics"]


class TestHeader:
    def test_fields_come_from_msh(self) -> None:
        """Header fields map to MSH-3 to MSH-12 and the raw bytes' SHA-256."""
        event = only(translate_segments(A08, evn(), pid()))
        header = event.record["header"]
        assert header["message_type"] == "ADT"
        assert header["trigger_event"] == "A08"
        assert header["control_id"] == "MSG000001"
        assert header["sending_application"] == "EPR"
        assert header["sending_facility"] == "RX1"
        assert header["receiving_application"] == "CAREBUS"
        assert header["receiving_facility"] == "G0001"
        assert header["hl7_version"] == "2.4"
        assert header["message_time"] == datetime(2026, 2, 9, 9, tzinfo=UTC)
        assert header["received_time"] == RECEIVED.replace(microsecond=123000)
        assert len(header["raw_sha256"]) == 64

    def test_event_time_prefers_evn_6_then_evn_2_then_msh_7(self) -> None:
        """EVN-6 wins over EVN-2, which wins over MSH-7."""
        both = only(translate_segments(A08, evn("20260209100000", "20260209080000"), pid()))
        assert both.record["header"]["event_time"] == datetime(2026, 2, 9, 8, tzinfo=UTC)
        recorded = only(translate_segments(A08, evn("20260209100000"), pid()))
        assert recorded.record["header"]["event_time"] == datetime(2026, 2, 9, 10, tzinfo=UTC)
        neither = only(translate_segments(A08, pid()))
        assert neither.record["header"]["event_time"] == datetime(2026, 2, 9, 9, tzinfo=UTC)

    def test_event_time_in_summer_is_converted_from_bst(self) -> None:
        """A summer event time without offset is BST: 09:00 local is 08:00 UTC."""
        event = only(
            translate_segments(msh("ADT^A08", time="20260709090000"), evn("20260709090000"), pid())
        )
        assert event.record["header"]["event_time"] == datetime(2026, 7, 9, 8, tzinfo=UTC)
        assert event.record["header"]["message_time"] == datetime(2026, 7, 9, 8, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("recorded", "occurred", "field"), [("2026XX", "", "EVN-2"), ("", "bad", "EVN-6")]
    )
    def test_unreadable_event_time_is_rejected(
        self, recorded: str, occurred: str, field: str
    ) -> None:
        """A present but unreadable EVN-6 or EVN-2 is a MissingRequiredField rejection."""
        with pytest.raises(MissingRequiredField) as info:
            translate_segments(A08, evn(recorded, occurred), pid())
        assert info.value.field == field
        assert info.value.control_id == "MSG000001"


class TestEventId:
    def test_is_uuid5_of_facility_control_id_time_and_index(self) -> None:
        """Event ids are uuid5 over facility, control id, MSH-7 and the event's index."""
        ctx = Context("C1", "ADT", "A01", "RX1", RECEIVED)
        expected = uuid.uuid5(EVENT_ID_NAMESPACE, "RX1\x1fC1\x1f20260209\x1f2")
        assert event_id(ctx, "20260209", 2) == str(expected)

    def test_the_same_message_gives_the_same_ids(self) -> None:
        """Translating a message twice gives identical ids; another control id gives others."""
        first = only(translate_segments(A08, evn(), pid()))
        again = only(translate_segments(A08, evn(), pid()))
        other = only(translate_segments(msh("ADT^A08", control_id="MSG000002"), evn(), pid()))
        assert first.record["header"]["event_id"] == again.record["header"]["event_id"]
        assert first.record["header"]["event_id"] != other.record["header"]["event_id"]


class TestRead:
    def test_reads_values_as_texts_and_component_texts_do(self) -> None:
        """read gives first values, then components, each HL7 null as an empty string."""
        message = parse_message(
            "MSH|^~\\&|A|B|||20260209||ADT^A08|C1|P|2.4\r"
            'PID|1||A1^^^NHS^NH~B2||DOE^JANE^""^^MS||19450312|""|||1 HIGH ST^^LEEDS\r'
            "PD1|||PRACTICE^^B86001|G1^GP"
        )
        pid_segment, pd1_segment = message.first("PID"), message.first("PD1")
        assert pid_segment is not None and pd1_segment is not None
        assert read(pid_segment, PID) == [
            *texts(pid_segment, *PID.fields),
            "DOE", "JANE", "", "", "MS",
            "1 HIGH ST", "", "LEEDS", "", "", "",
        ]  # fmt: skip
        assert read(pd1_segment, PD1) == ["G1", "PRACTICE", "", "B86001", *[""] * 7]

    def test_absent_segment_reads_as_empty_strings(self) -> None:
        """An absent segment gives one empty string per value the layout reads."""
        layout = Layout((2, 3), ((4, 3),), null_as_empty=True)
        assert read(None, layout) == [""] * 5
