"""Tests for connectors/translate/results.py: ORU^R01."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carebus.errors import MissingRequiredField
from tests.connectors.translate.helpers import (
    NHS_NUMBER,
    msh,
    only,
    pid,
    segment,
    translate_segments,
)

OBR = segment(
    "OBR",
    {1: "1", 2: "PL123", 3: "FL456", 4: "4548-4^Hemoglobin A1c^LN", 7: "20260110083000", 25: "F"},
)
OBX1 = "OBX|1|NM|4548-4^Hemoglobin A1c^LN||48|mmol/mol^^UCUM|20-41|H~A|||F|||20260110083000"
OBX2 = "OBX|2|CE|COMMENT^Comment^L||A^First\\S\\part^L~B^Second^L||||||P"


class TestResult:
    def test_obr_with_its_observations(self) -> None:
        """An OBR gives a request with status, time, numbers; each OBX an observation."""
        event = only(translate_segments(msh("ORU^R01^ORU_R01"), pid(), "ORC|RE", OBR, OBX1, OBX2))
        assert event.schema == "carebus.events.Result"
        (request,) = event.record["requests"]
        assert request["test_code"] == "4548-4"
        assert request["test_text"] == "Hemoglobin A1c"
        assert request["coding_system"] == "LN"
        assert request["status"] == "F"
        assert request["observation_time"] == datetime(2026, 1, 10, 8, 30, tzinfo=UTC)
        assert (request["placer_order_number"], request["filler_order_number"]) == (
            "PL123",
            "FL456",
        )
        first, second = request["observations"]
        assert first == {
            "set_id": "1",
            "value_type": "NM",
            "code": "4548-4",
            "text": "Hemoglobin A1c",
            "coding_system": "LN",
            "value": "48",
            "units": "mmol/mol",
            "reference_range": "20-41",
            "abnormal_flags": ["H", "A"],
            "status": "F",
            "observation_time": datetime(2026, 1, 10, 8, 30, tzinfo=UTC),
        }
        assert second["value"] == "A^First^part^L~B^Second^L"
        assert second["status"] == "P"
        assert second["abnormal_flags"] == []

    def test_several_requests_in_order(self) -> None:
        """Each OBR starts a new request that collects the OBX after it."""
        requests = only(
            translate_segments(msh("ORU^R01"), pid(), OBR, OBX1, "OBR|2|||2345-7^Glucose^LN", OBX2)
        ).record["requests"]
        assert [(r["test_code"], len(r["observations"])) for r in requests] == [
            ("4548-4", 1),
            ("2345-7", 1),
        ]

    def test_order_numbers_fall_back_to_orc(self) -> None:
        """Empty OBR-2/OBR-3 take ORC-2/ORC-3."""
        request = only(
            translate_segments(msh("ORU^R01"), pid(), "ORC|RE|P9|F9", "OBR|1|||X^Y", OBX1)
        ).record["requests"][0]
        assert (request["placer_order_number"], request["filler_order_number"]) == ("P9", "F9")

    def test_one_result_per_patient_group(self) -> None:
        """Two PIDs give two Result events, each with its own requests."""
        events = translate_segments(
            msh("ORU^R01"), pid(), OBR, OBX1, pid("MRN0202^^^RX1^MR"), "OBR|1|||2345-7^Glucose^LN"
        )
        assert [(e.key, e.record["requests"][0]["test_code"]) for e in events] == [
            (NHS_NUMBER, "4548-4"),
            ("RX1:MRN0202", "2345-7"),
        ]

    def test_observations_without_obr_get_an_empty_request(self) -> None:
        """OBX segments before any OBR are kept under a request with no test."""
        request = only(translate_segments(msh("ORU^R01"), pid(), OBX1)).record["requests"][0]
        assert request["test_code"] is None
        assert len(request["observations"]) == 1

    def test_empty_and_null_values(self) -> None:
        """An empty OBX-5 and an HL7 null are both null values."""
        requests = only(
            translate_segments(msh("ORU^R01"), pid(), OBR, "OBX|1|ST|X||", 'OBX|2|ST|X||""')
        ).record["requests"]
        assert [o["value"] for o in requests[0]["observations"]] == [None, None]

    def test_results_before_any_pid_are_rejected(self) -> None:
        """OBR before the first PID cannot be attributed: MissingRequiredField PID."""
        with pytest.raises(MissingRequiredField) as info:
            translate_segments(msh("ORU^R01"), OBR, pid())
        assert info.value.field == "PID"
