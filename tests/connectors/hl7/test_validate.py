"""Tests for connectors/hl7/validate.py: optional strict validation with hl7apy."""

from __future__ import annotations

import pytest

from carebus.errors import Unparseable
from connectors.hl7 import parse_message
from connectors.hl7.validate import StrictValidationFailed, StrictValidator, validate_strict

HEAD = "MSH|^~\\&|PAS|RXX01|CAREBUS|RYY02|20240105103000||ADT^A01^ADT_A01|CTRL-1|P|{v}"
VALID = "\r".join(
    [HEAD, "EVN||20240105102900", "PID|1||9434765919^^^NHS^NH||DOE^JANE||19700101|F", "PV1|1|I"]
)


class TestValidateStrict:
    def test_valid_message_passes(self) -> None:
        """A conforming ADT^A01 passes strict validation."""
        validate_strict(parse_message(VALID.format(v="2.5")))

    def test_missing_required_segment_fails(self) -> None:
        """A message without a required segment fails, with its control id."""
        message = parse_message(VALID.format(v="2.5").rsplit("\r", 1)[0])
        with pytest.raises(StrictValidationFailed) as info:
            validate_strict(message)
        assert info.value.control_id == "CTRL-1"
        assert info.value.reason == "strict-validation-failed"
        assert isinstance(info.value, Unparseable)

    def test_failure_never_quotes_values(self) -> None:
        """The detail names the error class, never the offending value."""
        text = VALID.format(v="2.5").replace("19700101", "SECRETDOB")
        with pytest.raises(StrictValidationFailed) as info:
            validate_strict(parse_message(text))
        assert "SECRETDOB" not in str(info.value)

    def test_unsupported_version_fails(self) -> None:
        """A version hl7apy does not know cannot pass strict validation."""
        with pytest.raises(StrictValidationFailed, match="cannot be validated strictly"):
            validate_strict(parse_message(VALID.format(v="2.9")))


class TestStrictValidator:
    def test_only_strict_senders_are_checked(self) -> None:
        """Messages from other senders are not validated at all."""
        broken = parse_message(VALID.format(v="2.5").rsplit("\r", 1)[0])
        StrictValidator(["OTHER"]).check(broken)
        StrictValidator([]).check(broken)
        with pytest.raises(StrictValidationFailed):
            StrictValidator(["RXX01"]).check(broken)
        assert StrictValidator(["RXX01"]).applies_to(broken)
