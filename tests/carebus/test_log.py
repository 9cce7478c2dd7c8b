"""Tests for carebus.log: patient data never reaches the log output."""

from __future__ import annotations

import io
import json
from typing import Literal

import pytest

from carebus.log import configure_logging, get_logger
from carebus.settings import LogSettings

NHS_NUMBER = "9434765919"
NAME = "Jane Smith"
BIRTH_DATE = "1950-03-02"
PATIENT_VALUES = ("9434765919", "943 476 5919", "Jane", "Smith", "1950-03-02", "19500302")

HL7 = (
    "MSH|^~\\&|PAS|RJE|EPR|M83001|20260302140500||ADT^A01|MSG001|P|2.4\r"
    "PID|1||9434765919^^^NHS^NH||SMITH^JANE||19500302|F\r"
)


def log_output(fmt: Literal["json", "console"], *, mask: bool = True) -> str:
    """Log one event full of patient data and return what was written."""
    stream = io.StringIO()
    configure_logging(LogSettings(format=fmt, mask_patient_data=mask), stream=stream)
    get_logger("tests.log").info(
        f"admitted {NAME} born {BIRTH_DATE} (NHS 943 476 5919) as SMITH^JANE 19500302",
        nhs_number=NHS_NUMBER,
        name=NAME,
        date_of_birth=BIRTH_DATE,
        detail=f"patient {NAME}, DOB {BIRTH_DATE}, NHS {NHS_NUMBER}",
        control_id="MSG001",
        sending_facility="RJE",
    )
    return stream.getvalue()


class TestMasking:
    @pytest.mark.parametrize("fmt", ["json", "console"])
    def test_no_patient_data_in_output(self, fmt: Literal["json", "console"]) -> None:
        """An NHS number, name and birth date, as keys and inside strings, are all masked."""
        output = log_output(fmt)
        assert output.strip()
        for value in PATIENT_VALUES:
            assert value.lower() not in output.lower(), value

    @pytest.mark.parametrize("fmt", ["json", "console"])
    def test_control_ids_and_facility_codes_still_appear(
        self, fmt: Literal["json", "console"]
    ) -> None:
        """Masking leaves the fields operators need: control id and sending facility."""
        output = log_output(fmt)
        assert "MSG001" in output
        assert "RJE" in output

    def test_json_output_is_one_json_object_per_line(self) -> None:
        """The json renderer writes one parseable object per event, patient keys masked."""
        (line,) = log_output("json").splitlines()
        record = json.loads(line)
        assert record["nhs_number"] == "***"
        assert record["name"] == "***"
        assert record["date_of_birth"] == "***"
        assert record["control_id"] == "MSG001"

    def test_turning_masking_off_shows_the_values(self) -> None:
        """With mask_patient_data off the same event shows the values (the test can fail)."""
        output = log_output("json", mask=False)
        assert NHS_NUMBER in output
        assert NAME in output

    def test_hl7_message_in_a_value_is_masked_whole(self) -> None:
        """An HL7 message logged by mistake is replaced, not printed."""
        stream = io.StringIO()
        configure_logging(LogSettings(format="json"), stream=stream)
        get_logger("tests.log").warning("unexpected", text=HL7, bytes_value=HL7.encode())
        output = stream.getvalue()
        assert "PID|" not in output
        assert "SMITH" not in output
        assert NHS_NUMBER not in output

    def test_patient_keys_nested_in_structures_are_masked(self) -> None:
        """Patient keys inside dicts and lists are masked too."""
        stream = io.StringIO()
        configure_logging(LogSettings(format="json"), stream=stream)
        get_logger("tests.log").info(
            "event", record={"demographics": [{"family": "Smith", "dob": BIRTH_DATE}]}
        )
        output = stream.getvalue()
        assert "Smith" not in output
        assert BIRTH_DATE not in output

    def test_exception_text_is_masked(self) -> None:
        """A traceback whose message carries an NHS number is masked like everything else."""
        stream = io.StringIO()
        configure_logging(LogSettings(format="json"), stream=stream)
        try:
            raise ValueError(f"bad identifier {NHS_NUMBER}")
        except ValueError:
            get_logger("tests.log").exception("failed", control_id="MSG001")
        output = stream.getvalue()
        assert "ValueError" in output
        assert NHS_NUMBER not in output
