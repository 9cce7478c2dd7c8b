"""Tests for connectors/nhs.py: the NHS number modulus-11 check."""

from __future__ import annotations

import pytest

from connectors.nhs import is_valid_nhs_number, normalise_nhs_number


class TestNormaliseNhsNumber:
    @pytest.mark.parametrize("number", ["9434765919", "9434797373", "9434798116", "4010232137"])
    def test_valid_numbers(self, number: str) -> None:
        """Numbers whose tenth digit is the modulus-11 check digit are valid."""
        assert normalise_nhs_number(number) == number
        assert is_valid_nhs_number(number)

    def test_a_wrong_check_digit_is_invalid(self) -> None:
        """Changing the last digit of a valid number makes it invalid."""
        assert normalise_nhs_number("9434765918") is None
        assert not is_valid_nhs_number("9434765910")

    def test_a_check_value_of_eleven_means_zero(self) -> None:
        """When the weighted sum is a multiple of 11 the check digit is 0 (10 + 6*2 = 22)."""
        assert normalise_nhs_number("1000000060") == "1000000060"
        assert normalise_nhs_number("1000000061") is None

    @pytest.mark.parametrize("last", "0123456789")
    def test_a_check_value_of_ten_is_never_valid(self, last: str) -> None:
        """Nine digits whose check value is 10 (10 + 1*2 = 12) give no valid number."""
        assert normalise_nhs_number(f"100000001{last}") is None

    @pytest.mark.parametrize("written", ["943 476 5919", "943-476-5919", " 9434765919"])
    def test_spaces_and_hyphens_are_allowed(self, written: str) -> None:
        """Spaces and hyphens between digits are dropped from the normalised number."""
        assert normalise_nhs_number(written) == "9434765919"

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "943476591",
            "94347659190",
            "943476591X",
            "943476591\uff19",
            "9434.76591",
            "+434765919",
        ],
    )
    def test_anything_but_ten_ascii_digits_is_invalid(self, value: str) -> None:
        """Wrong lengths, letters, non-ASCII digits and punctuation are invalid."""
        assert normalise_nhs_number(value) is None
