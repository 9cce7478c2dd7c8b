"""Tests for carebus/synth/hl7.py: HL7 v2.4 in the NHS ITK style."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime

import pytest

from carebus.errors import MessageRejected
from carebus.synth import REGION, hl7
from carebus.synth.messages import TESTS, Adt, Booking, Letter, Referral, RegisterEntry, Result
from carebus.synth.people import make_person
from connectors.hl7 import parse_message
from connectors.translate import translate

SUMMER = datetime(2026, 7, 1, 9, 30, tzinfo=UTC)
WINTER = datetime(2026, 1, 12, 9, 30, tzinfo=UTC)
HOSPITAL = REGION.hospitals[0]
PRACTICE = REGION.practices[0]
PERSON = make_person(42, random.Random(1), REGION, date(2026, 1, 1))
VERIFIED = hl7.Identity(PERSON.nhs_number)


def _render(spec: object, identity: hl7.Identity = VERIFIED, **kwargs: object) -> bytes:
    return hl7.render(
        spec,  # type: ignore[arg-type]
        PERSON,
        control_id="CTRL1",
        sent=WINTER,
        identity=identity,
        **kwargs,  # type: ignore[arg-type]
    )


def _translate(raw: bytes) -> list[object]:
    return list(translate(parse_message(raw), raw=raw, received_time=WINTER))


class TestTimestamps:
    def test_hospitals_send_london_time_with_offset(self) -> None:
        """Hospital systems stamp local time with its UTC offset, BST included."""
        assert hl7.ts(WINTER, HOSPITAL) == "20260112093000+0000"
        assert hl7.ts(SUMMER, HOSPITAL) == "20260701103000+0100"

    def test_other_systems_send_london_wall_clock_time(self) -> None:
        """Practice systems send Europe/London time without an offset."""
        assert hl7.ts(SUMMER, PRACTICE) == "20260701103000"


class TestItkStyle:
    def test_message_header_and_segment_terminators(self) -> None:
        """MSH is v2.4 with AL/NE, every segment ends with CR and there is no LF."""
        raw = _render(Adt("A01", HOSPITAL, WINTER, "I", "AMU", "V1", "E", admit_time=WINTER))
        assert raw.endswith(b"\r")
        assert b"\n" not in raw
        message = parse_message(raw)
        msh = message.first("MSH")
        assert msh is not None
        assert (message.version, message.control_id, message.sending_facility) == (
            "2.4",
            "CTRL1",
            HOSPITAL.code,
        )
        assert (msh.get(9, 1), msh.get(9, 2), msh.get(9, 3)) == ("ADT", "A01", "ADT_A01")
        assert (msh.get(15), msh.get(16)) == ("AL", "NE")

    def test_nhs_number_hospital_number_status_and_gp(self) -> None:
        """PID-3 has the NHS number (NHS/NH) then the MRN, PID-32 its status, PD1 the GP."""
        message = parse_message(_render(Adt("A04", HOSPITAL, WINTER, "O", "CLINIC", "V1")))
        pid, pd1 = message.first("PID"), message.first("PD1")
        assert pid is not None and pd1 is not None
        assert pid.repetitions(3) == 2
        assert pid.components(3, 1)[0] == PERSON.nhs_number
        assert (pid.get(3, 4, repetition=1), pid.get(3, 5, repetition=1)) == ("NHS", "NH")
        assert pid.get(3, 1, repetition=2) == PERSON.mrn(HOSPITAL)
        assert (pid.get(3, 4, repetition=2), pid.get(3, 5, repetition=2)) == (HOSPITAL.code, "MR")
        assert pid.get(32) == hl7.VERIFIED
        assert pd1.get(3, 3) == PERSON.practice.code
        assert pd1.get(4, 1) == PERSON.gp_code

    def test_missing_and_mistyped_numbers(self) -> None:
        """Without an NHS number PID-3 holds only the MRN; a typo keeps its NHS/NH labels."""
        missing = parse_message(
            _render(Adt("A04", HOSPITAL, WINTER), hl7.Identity(None, hl7.TRACE_REQUIRED))
        ).first("PID")
        assert missing is not None
        assert missing.repetitions(3) == 1
        assert missing.get(3, 5) == "MR"
        assert missing.get(32) == hl7.TRACE_REQUIRED
        typo = parse_message(
            _render(Adt("A04", HOSPITAL, WINTER), hl7.Identity("9990000001", hl7.NOT_TRACED))
        ).first("PID")
        assert typo is not None
        assert (typo.get(3, 1), typo.get(3, 4), typo.get(32)) == ("9990000001", "NHS", "02")

    def test_event_time_is_evn_6_and_recorded_time_evn_2(self) -> None:
        """EVN-6 is when it happened, EVN-2 and MSH-7 when the message was made."""
        happened = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
        evn = parse_message(_render(Adt("A01", HOSPITAL, happened, "I"))).first("EVN")
        assert evn is not None
        assert (evn.get(2), evn.get(6)) == ("20260112093000+0000", "20260112090000+0000")

    def test_free_text_is_escaped(self) -> None:
        """Delimiters in text are escaped, so the text reads back unchanged."""
        text = "Plan: A|B ^ C & D ~ E \\ F"
        raw = _render(Letter(HOSPITAL, WINTER, "D1", "CLINIC-LETTER", text))
        obx = parse_message(raw).first("OBX")
        assert obx is not None
        assert obx.get(5) == text


class TestRulesRelevantFields:
    def test_two_week_wait_referral(self) -> None:
        """A REF^I12 goes to the hospital in MSH-6 with RF1-2 2WW."""
        raw = _render(Referral(PRACTICE, HOSPITAL, WINTER, "R1", "2WW", "Suspected lung cancer"))
        message = parse_message(raw)
        rf1 = message.first("RF1")
        assert rf1 is not None
        assert (message.receiving_facility, rf1.get(2)) == (HOSPITAL.code, "2WW")

    def test_appointment_start_in_ais_4_and_sch_11(self) -> None:
        """SIU^S12 carries the filler id in SCH-2 and the start in AIS-4 and SCH-11.4."""
        raw = _render(Booking("S12", HOSPITAL, WINTER, "A1", SUMMER, "RESP^Respiratory clinic"))
        message = parse_message(raw)
        sch, ais = message.first("SCH"), message.first("AIS")
        assert sch is not None and ais is not None
        assert sch.get(2) == "A1"
        assert ais.get(4) == sch.get(11, 4) == "20260701103000+0100"

    def test_final_result_status_in_obr_25(self) -> None:
        """ORU^R01 has OBR-25 and OBX-11 set to the result status."""
        psa = TESTS["PSA"]
        raw = _render(Result(HOSPITAL, WINTER, "O1", psa, WINTER, "F", "5.1", abnormal=True))
        message = parse_message(raw)
        obr, obx = message.first("OBR"), message.first("OBX")
        assert obr is not None and obx is not None
        assert (obr.get(4), obr.get(25), obx.get(11), obx.get(8)) == (psa.code, "F", "F", "H")

    def test_outcome_letter_and_register_entry_codes(self) -> None:
        """TXA-2 carries the document type and PRB-3 the SNOMED CT register code."""
        letter = parse_message(_render(Letter(HOSPITAL, WINTER, "D1", "CANCER-OUTCOME", "Done.")))
        txa = letter.first("TXA")
        assert txa is not None and txa.get(2) == "CANCER-OUTCOME"
        entry = RegisterEntry("PC1", PRACTICE, WINTER, "P1", "1403151000000103", "On register")
        prb = parse_message(_render(entry)).first("PRB")
        assert prb is not None
        assert (prb.get(1), prb.get(3), prb.get(3, 3)) == ("AD", "1403151000000103", "SCT")

    def test_death_fields_and_discharge_destination(self) -> None:
        """PID-29/PID-30 show a death; PV1-37 the discharge destination."""
        died = datetime(2026, 1, 11, 23, 0, tzinfo=UTC)
        update = Adt("A08", PRACTICE, WINTER, "N", death_time=died, death_indicator=True)
        pid = parse_message(_render(update)).first("PID")
        assert pid is not None
        assert (pid.get(29), pid.get(30)) == ("20260111230000", "Y")
        discharge = Adt(
            "A03", HOSPITAL, WINTER, "I", discharge_time=WINTER, discharge_destination="88"
        )
        pv1 = parse_message(_render(discharge)).first("PV1")
        assert pv1 is not None
        assert (pv1.get(37), pv1.get(45)) == ("88", "20260112093000+0000")

    def test_temporary_number_admission_has_no_nhs_number(self) -> None:
        """An unidentified arrival is admitted under a temporary MRN with PID-32 03."""
        spec = Adt("A01", HOSPITAL, WINTER, "I", "RESUS", "V1", "E", temporary_id="T1")
        pid = parse_message(_render(spec)).first("PID")
        assert pid is not None
        assert (pid.repetitions(3), pid.get(3), pid.get(32)) == (1, "T1", "03")


class TestMalformed:
    @pytest.mark.parametrize("kind", hl7.MALFORMED)
    def test_each_kind_is_rejected_by_the_bus(self, kind: str) -> None:
        """Every deliberately broken message is rejected, never translated."""
        raw = _render(Adt("A04", HOSPITAL, WINTER, "O", "CLINIC", "V1"), malformed=kind)
        assert raw.startswith(b"MSH|")
        with pytest.raises(MessageRejected):
            _translate(raw)

    def test_the_same_message_unbroken_translates(self) -> None:
        """Without breakage the same record translates, so the breakage is what fails."""
        raw = _render(Adt("A04", HOSPITAL, WINTER, "O", "CLINIC", "V1"))
        assert _translate(raw)
