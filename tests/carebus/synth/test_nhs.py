"""Tests for carebus/synth/nhs.py: synthetic NHS numbers and their typos."""

from __future__ import annotations

import random

import pytest

from carebus.synth import nhs


class TestIsValid:
    @pytest.mark.parametrize("number", ["9434765919", "9434797373", "4010232137"])
    def test_accepts_numbers_that_pass_modulus_11(self, number: str) -> None:
        """Published example NHS numbers pass the check."""
        assert nhs.is_valid(number)

    @pytest.mark.parametrize(
        "number", ["9434765918", "943476591", "94347659190", "94347659l9", "", "943 476 5919"]
    )
    def test_rejects_wrong_check_digit_length_or_characters(self, number: str) -> None:
        """A wrong check digit, length or a non-digit fails."""
        assert not nhs.is_valid(number)

    def test_rejects_numbers_whose_check_digit_would_be_ten(self) -> None:
        """Nine digits whose check digit computes to 10 make no valid number."""
        candidates = (f"{n:09d}" for n in range(100_000_000, 100_001_000))
        first_nine = next(c for c in candidates if nhs.check_digit(c) is None)
        assert all(not nhs.is_valid(first_nine + str(d)) for d in range(10))


class TestSynthetic:
    def test_numbers_are_valid_and_in_the_test_range(self) -> None:
        """Every generated number passes modulus 11 and starts 999, never issued to a person."""
        rng = random.Random(1)
        numbers = [nhs.synthetic(rng) for _ in range(2000)]
        assert all(nhs.is_valid(n) for n in numbers)
        assert all(n.startswith(nhs.TEST_PREFIX) for n in numbers)
        assert len(set(numbers)) > 1900

    def test_same_random_stream_gives_same_numbers(self) -> None:
        """Generation is reproducible from the random stream."""
        assert [nhs.synthetic(random.Random(3)) for _ in range(3)] == [
            nhs.synthetic(random.Random(3)) for _ in range(3)
        ]


class TestCorrupt:
    def test_typo_fails_the_check_and_keeps_the_shape(self) -> None:
        """A mistyped copy is ten digits, differs from the original and fails modulus 11."""
        rng = random.Random(5)
        for _ in range(500):
            number = nhs.synthetic(rng)
            typo = nhs.corrupt(number, rng)
            assert typo != number
            assert len(typo) == 10
            assert typo.isdigit()
            assert not nhs.is_valid(typo)


class TestNumbered:
    def test_numbers_are_valid_in_the_test_range_and_stable(self) -> None:
        """Each seed gives a valid 999-range number, the same one every time, in seed order."""
        numbers = [nhs.numbered(seed) for seed in range(2_000)]
        assert all(nhs.is_valid(n) and n.startswith(nhs.TEST_PREFIX) for n in numbers)
        assert numbers == [nhs.numbered(seed) for seed in range(2_000)]
        assert numbers == sorted(numbers)
        assert len(set(numbers)) > 1_800

    def test_a_seed_without_a_check_digit_takes_the_next_number(self) -> None:
        """Nine digits whose check digit would be 10 give the next valid number instead."""
        seed = next(s for s in range(1_000) if nhs.check_digit(f"999{s:06d}") is None)
        assert nhs.numbered(seed) == nhs.numbered(seed + 1)

    @pytest.mark.parametrize("seed", [-1, 1_000_000])
    def test_seeds_outside_the_range_are_refused(self, seed: int) -> None:
        """A seed that would leave the 999 test range is a ValueError."""
        with pytest.raises(ValueError, match="seed"):
            nhs.numbered(seed)
