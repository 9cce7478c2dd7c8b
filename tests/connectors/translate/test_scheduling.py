"""Tests for connectors/translate/scheduling.py: SIU appointments."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carebus.errors import MissingRequiredField
from tests.connectors.translate.helpers import msh, only, pid, segment, translate_segments

SCH = "SCH|PE4A|E4A||||NEW|Clinic|OP^Outpatient|30|MIN|^^30^20260301090000||||||||||||||Booked"
AIS = "AIS|1||CLINIC^Outpatient clinic|20260301100000|||45|MIN"


class TestAppointment:
    @pytest.mark.parametrize(
        ("trigger", "action"),
        [
            ("S12", "BOOKED"),
            ("S13", "RESCHEDULED"),
            ("S14", "MODIFIED"),
            ("S15", "CANCELLED"),
            ("S17", "DELETED"),
            ("S26", "NO_SHOW"),
        ],
    )
    def test_action_follows_the_trigger(self, trigger: str, action: str) -> None:
        """Each SIU trigger gives an Appointment with its action."""
        event = only(translate_segments(msh(f"SIU^{trigger}^SIU_S12"), SCH, pid(), "RGS|1", AIS))
        assert event.schema == "carebus.events.Appointment"
        assert event.record["action"] == action

    def test_fields_from_sch_and_ais(self) -> None:
        """Ids from SCH-1/2, start and duration from AIS, type and status from SCH."""
        record = only(translate_segments(msh("SIU^S12"), SCH, pid(), "RGS|1", AIS)).record
        assert record["filler_appointment_id"] == "E4A"
        assert record["placer_appointment_id"] == "PE4A"
        assert record["start_time"] == datetime(2026, 3, 1, 10, tzinfo=UTC)
        assert record["duration_minutes"] == 45
        assert record["appointment_type"] == "OP"
        assert record["service"] == "CLINIC"
        assert record["filler_status"] == "Booked"

    def test_start_falls_back_to_sch_11_4(self) -> None:
        """Without AIS-4 the start is SCH-11.4 and the duration SCH-9 in SCH-10 units."""
        record = only(translate_segments(msh("SIU^S12"), SCH, pid())).record
        assert record["start_time"] == datetime(2026, 3, 1, 9, tzinfo=UTC)
        assert record["duration_minutes"] == 30
        assert record["service"] is None

    def test_start_falls_back_to_tq1_7(self) -> None:
        """Without AIS-4 and SCH-11.4 (HL7 2.5+), the start is TQ1-7."""
        sch = segment("SCH", {1: "P1", 2: "F1"})
        record = only(
            translate_segments(msh("SIU^S12"), sch, "TQ1|||||||20260301120000", pid())
        ).record
        assert record["start_time"] == datetime(2026, 3, 1, 12, tzinfo=UTC)

    def test_summer_start_is_bst(self) -> None:
        """A local start time in summer is converted from BST."""
        ais = "AIS|1||CLINIC|20260701100000"
        record = only(translate_segments(msh("SIU^S12"), SCH, pid(), ais)).record
        assert record["start_time"] == datetime(2026, 7, 1, 9, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("amount", "unit", "minutes"),
        [
            ("2", "H", 120),
            ("90", "S", 1),
            ("1.5", "hours", 90),
            ("30", "", 30),
            ("3", "weeks", None),
            ("soon", "MIN", None),
        ],
    )
    def test_duration_units(self, amount: str, unit: str, minutes: int | None) -> None:
        """Durations convert from hours, seconds and minutes (the default); others are null."""
        sch = segment("SCH", {1: "P1", 2: "F1", 9: amount, 10: unit})
        assert (
            only(translate_segments(msh("SIU^S12"), sch, pid())).record["duration_minutes"]
            == minutes
        )

    def test_missing_filler_id_is_rejected(self) -> None:
        """Without SCH-2.1 cancellations could not be matched: MissingRequiredField SCH-2."""
        with pytest.raises(MissingRequiredField) as info:
            translate_segments(msh("SIU^S12"), segment("SCH", {1: "P1"}), pid())
        assert info.value.field == "SCH-2"

    def test_missing_sch_is_rejected(self) -> None:
        """An SIU without SCH is MissingRequiredField SCH."""
        with pytest.raises(MissingRequiredField) as info:
            translate_segments(msh("SIU^S12"), pid())
        assert info.value.field == "SCH"
