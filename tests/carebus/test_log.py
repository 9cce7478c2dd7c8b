"""Tests for carebus.log: patient data never reaches the log output."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Literal

import pytest

from carebus.errors import ConfigError, KafkaUnavailable
from carebus.log import (
    CLEAR_FIELDS,
    DIGEST_FIELDS,
    configure_logging,
    digest,
    get_logger,
    use_digest_key,
)
from carebus.settings import LogSettings

REPO_ROOT = Path(__file__).resolve().parents[2]

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


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TestFieldsAllowedByName:
    def test_an_undeclared_field_is_digested(self) -> None:
        """A field no one declared is logged as a digest, whatever it holds."""
        stream = io.StringIO()
        configure_logging(LogSettings(format="json"), stream=stream)
        get_logger("tests.log").info("event", ward_note="Mrs Smith, bed 4")
        (record,) = json_lines(stream)
        assert record["ward_note"] == digest("Mrs Smith, bed 4")
        assert "Smith" not in stream.getvalue()

    def test_identifiers_appear_only_as_digests(self) -> None:
        """Dedup keys and patient keys are digested, the same value to the same digest."""
        stream = io.StringIO()
        configure_logging(LogSettings(format="json"), stream=stream)
        key = f"hospice-handoff-missed|{NHS_NUMBER}|2026-03-02"
        get_logger("tests.log").info("one", dedup_key=key, patient_key=NHS_NUMBER)
        get_logger("tests.log").info("two", dedup_key=key)
        one, two = json_lines(stream)
        assert one["dedup_key"] == two["dedup_key"] == digest(key)
        assert str(one["patient_key"]).startswith("#")
        assert NHS_NUMBER not in stream.getvalue()

    def test_declared_fields_are_kept(self) -> None:
        """Declared fields (control id, facility, counts, reason) are logged as they are."""
        stream = io.StringIO()
        configure_logging(LogSettings(format="json"), stream=stream)
        get_logger("tests.log").info(
            "rejected", control_id="MSG001", sending_facility="RJE", messages=3, reason="x-y"
        )
        (record,) = json_lines(stream)
        assert record["control_id"] == "MSG001"
        assert record["sending_facility"] == "RJE"
        assert record["messages"] == 3
        assert record["reason"] == "x-y"

    def test_a_digest_is_keyed(self, tmp_path: Path) -> None:
        """Digests depend on the deployment's key, so one cannot be reversed by trying values."""
        key_file = tmp_path / "digest.key"
        key_file.write_bytes(b"one secret of the region\n")
        use_digest_key(key_file)
        first = digest(NHS_NUMBER)
        key_file.write_bytes(b"another secret of the region\n")
        use_digest_key(key_file)
        second = digest(NHS_NUMBER)
        use_digest_key(None)
        assert first != second
        assert first != "#" + hashlib.sha256(NHS_NUMBER.encode()).hexdigest()[:16]

    @pytest.mark.parametrize("content", [None, b"short\n"])
    def test_an_unusable_key_file_is_a_one_line_error(
        self, tmp_path: Path, content: bytes | None
    ) -> None:
        """A missing key file, or one with a guessable key, stops the start with a ConfigError."""
        key_file = tmp_path / "digest.key"
        if content is not None:
            key_file.write_bytes(content)
        with pytest.raises(ConfigError, match=r"log\.digest_key_file"):
            use_digest_key(key_file)
        use_digest_key(None)

    def test_a_drop_file_name_is_digested(self) -> None:
        """Drop files are often named after the patient: their names appear only as digests."""
        stream = io.StringIO()
        configure_logging(LogSettings(format="json"), stream=stream)
        get_logger("tests.log").info("file refused", file="SMITH_JOHN_9434765919.hl7")
        (record,) = json_lines(stream)
        assert record["file"] == digest("SMITH_JOHN_9434765919.hl7")

    def test_every_field_carebus_logs_is_declared(self) -> None:
        """A log call in carebus with a field neither clear nor digested fails here."""
        undeclared = {
            (path, field)
            for path, field in logged_fields()
            if field not in CLEAR_FIELDS and field not in DIGEST_FIELDS
        }
        assert not undeclared, sorted(undeclared)

    def test_the_scan_finds_log_calls(self) -> None:
        """The scan above sees the fields of carebus's log calls (so it can fail)."""
        fields = {field for _, field in logged_fields()}
        assert {"control_id", "sending_facility", "reason", "error"} <= fields


_LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "bind"}


def logged_fields() -> list[tuple[str, str]]:
    """(module path, field name) for every keyword of every log call in carebus's packages."""
    found = []
    for package in ("carebus", "connectors", "streams", "schemas"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if node.func.attr not in _LOG_METHODS:
                    continue
                receiver = ast.unparse(node.func.value)
                if "log" not in receiver.lower():
                    continue
                found += [(str(path), kw.arg) for kw in node.keywords if kw.arg]
    return found


class TestThirdPartyRecords:
    def test_a_library_record_is_masked_and_rendered_alike(self) -> None:
        """A stdlib record (aiokafka, faust, ...) goes through the same masking and renderer."""
        stream = io.StringIO()
        configure_logging(LogSettings(format="json"), stream=stream)
        logging.getLogger("aiokafka.consumer").warning("bad record for %s: %s", NHS_NUMBER, HL7)
        (record,) = json_lines(stream)
        assert record["logger"] == "aiokafka.consumer"
        assert record["level"] == "warning"
        assert NHS_NUMBER not in stream.getvalue()
        assert "SMITH" not in stream.getvalue()

    def test_a_library_traceback_keeps_its_frames_not_its_message(self) -> None:
        """A library exception's message may hold record values: only type and frames are logged."""
        stream = io.StringIO()
        configure_logging(LogSettings(format="json"), stream=stream)
        try:
            raise ValueError(f"cannot decode value={NAME!r}")
        except ValueError:
            logging.getLogger("faust.agents").exception("agent crashed")
        (record,) = json_lines(stream)
        exception = str(record["exception"])
        assert "builtins.ValueError: (message withheld)" in exception
        assert "test_log.py" in exception
        assert "Smith" not in stream.getvalue()

    def test_a_carebus_error_keeps_its_message(self) -> None:
        """carebus's own errors are written without patient data, so their message is kept."""
        stream = io.StringIO()
        configure_logging(LogSettings(format="json"), stream=stream)
        try:
            try:
                raise OSError("connection refused")
            except OSError as exc:
                raise KafkaUnavailable("no broker answered within 5s") from exc
        except KafkaUnavailable:
            get_logger("tests.log").exception("publish failed", control_id="MSG001")
        (record,) = json_lines(stream)
        exception = str(record["exception"])
        assert "carebus.errors.KafkaUnavailable: no broker answered within 5s" in exception
        assert "builtins.OSError: (message withheld)" in exception
        assert "connection refused" not in exception
