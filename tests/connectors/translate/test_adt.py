"""Tests for connectors/translate/adt.py: encounters, demographics and merges."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carebus.errors import InvalidIdentifier, MissingRequiredField
from tests.connectors.translate.helpers import (
    NHS_NUMBER,
    evn,
    msh,
    only,
    pid,
    segment,
    translate_segments,
)

PV1_FIELDS = {
    1: "1",
    2: "I",
    3: "WARD7^BAY2^BED3^RX1",
    4: "E",
    6: "AE^^^RX1",
    19: "V000123",
    36: "01",
    37: "88",
    44: "20260209090000",
    45: "20260212110000",
}


class TestEncounter:
    @pytest.mark.parametrize(
        ("trigger", "kind"),
        [
            ("A01", "ADMITTED"),
            ("A02", "TRANSFERRED"),
            ("A03", "DISCHARGED"),
            ("A04", "REGISTERED"),
            ("A05", "PRE_ADMITTED"),
            ("A11", "ADMISSION_CANCELLED"),
            ("A12", "TRANSFER_CANCELLED"),
            ("A13", "DISCHARGE_CANCELLED"),
        ],
    )
    def test_kind_follows_the_trigger(self, trigger: str, kind: str) -> None:
        """Each ADT encounter trigger gives an Encounter of its kind."""
        event = only(
            translate_segments(
                msh(f"ADT^{trigger}^ADT_A01"), evn(), pid(), segment("PV1", PV1_FIELDS)
            )
        )
        assert event.schema == "carebus.events.Encounter"
        assert event.record["kind"] == kind
        assert event.key == NHS_NUMBER

    def test_pv1_fields(self) -> None:
        """Visit number, class, admission type, locations, disposition, destination, times."""
        record = only(
            translate_segments(msh("ADT^A03"), evn(), pid(), segment("PV1", PV1_FIELDS))
        ).record
        assert record["visit_number"] == "V000123"
        assert record["patient_class"] == "I"
        assert record["admission_type"] == "E"
        assert record["location"] == {
            "point_of_care": "WARD7",
            "room": "BAY2",
            "bed": "BED3",
            "facility": "RX1",
        }
        assert record["prior_location"] == {
            "point_of_care": "AE",
            "room": None,
            "bed": None,
            "facility": "RX1",
        }
        assert record["discharge_disposition"] == "01"
        assert record["discharge_destination"] == "88"
        assert record["admit_time"] == datetime(2026, 2, 9, 9, tzinfo=UTC)
        assert record["discharge_time"] == datetime(2026, 2, 12, 11, tzinfo=UTC)

    def test_without_pv1_the_visit_fields_are_null(self) -> None:
        """An encounter message without PV1 still translates, with null visit fields."""
        record = only(translate_segments(msh("ADT^A11"), evn(), pid())).record
        assert record["kind"] == "ADMISSION_CANCELLED"
        assert record["location"] is None
        assert record["visit_number"] is None
        assert record["discharge_time"] is None

    def test_unreadable_optional_times_are_null(self) -> None:
        """A garbled PV1-44 is null rather than a rejection (only required times reject)."""
        pv1 = segment("PV1", {1: "1", 44: "yesterday"})
        assert (
            only(translate_segments(msh("ADT^A01"), evn(), pid(), pv1)).record["admit_time"] is None
        )


class TestDemographics:
    @pytest.mark.parametrize("trigger", ["A08", "A28", "A31"])
    def test_updates_and_adds_give_patient_demographics(self, trigger: str) -> None:
        """A08, A28 and A31 give a PatientDemographics event with only header and patient."""
        event = only(translate_segments(msh(f"ADT^{trigger}"), evn(), pid()))
        assert event.schema == "carebus.events.PatientDemographics"
        assert set(event.record) == {"header", "patient"}


class TestMerge:
    def test_pid_survives_and_mrg_is_retired(self) -> None:
        """A40: the patient is PID-3's, retired identifiers and key come from MRG-1."""
        mrg = segment("MRG", {1: "MRN0999^^^RX1^MR~9434765918^^^NHS^NH"})
        event = only(translate_segments(msh("ADT^A40"), evn(), pid(), mrg))
        assert event.schema == "carebus.events.PatientMerged"
        assert event.key == NHS_NUMBER
        assert event.record["retired_key"] == "RX1:MRN0999"
        assert [i["value"] for i in event.record["retired_identifiers"]] == [
            "MRN0999",
            "9434765918",
        ]

    def test_retired_nhs_number_is_the_retired_key(self) -> None:
        """A valid NHS number in MRG-1 is the retired key, as for PID-3."""
        mrg = segment("MRG", {1: "MRN0999^^^RX1^MR~9434797373^^^NHS^NH"})
        event = only(translate_segments(msh("ADT^A40"), evn(), pid(), mrg))
        assert event.record["retired_key"] == "9434797373"

    def test_one_event_per_patient_group(self) -> None:
        """Each PID/MRG pair gives its own PatientMerged, in order."""
        events = translate_segments(
            msh("ADT^A40"),
            evn(),
            pid(),
            segment("MRG", {1: "OLD1^^^RX1"}),
            pid("MRN0202^^^RX1^MR"),
            segment("PD1", {3: "S^^M83001"}),
            segment("MRG", {1: "OLD2^^^RX1"}),
        )
        assert [(e.key, e.record["retired_key"]) for e in events] == [
            (NHS_NUMBER, "RX1:OLD1"),
            ("RX1:MRN0202", "RX1:OLD2"),
        ]
        assert events[1].record["patient"]["demographics"]["registered_gp"] == "M83001"
        assert len({e.record["header"]["event_id"] for e in events}) == 2

    def test_missing_mrg_is_rejected(self) -> None:
        """A patient group without MRG is MissingRequiredField MRG."""
        with pytest.raises(MissingRequiredField) as info:
            translate_segments(msh("ADT^A40"), evn(), pid())
        assert info.value.field == "MRG"

    def test_empty_mrg_1_is_rejected(self) -> None:
        """An MRG without any MRG-1 value is InvalidIdentifier MRG-1."""
        with pytest.raises(InvalidIdentifier) as info:
            translate_segments(msh("ADT^A40"), evn(), pid(), segment("MRG", {2: "X"}))
        assert info.value.field == "MRG-1"

    def test_missing_pid_is_rejected(self) -> None:
        """An A40 with no PID at all is MissingRequiredField PID."""
        with pytest.raises(MissingRequiredField) as info:
            translate_segments(msh("ADT^A40"), evn(), segment("MRG", {1: "OLD1^^^RX1"}))
        assert info.value.field == "PID"
