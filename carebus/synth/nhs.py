"""Synthetic NHS numbers.

Generated numbers are in the 999 range, which the NHS reserves for testing and
never issues to a person, and pass the modulus-11 check. :func:`corrupt` makes a
mistyped copy that fails it, as a clerk's typo would.
"""

from __future__ import annotations

import random

_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)
#: The first three digits of every synthetic number: never issued to a person.
TEST_PREFIX = "999"


def check_digit(first_nine: str) -> int | None:
    """The modulus-11 check digit for nine digits; ``None`` when no digit fits (10)."""
    total = sum(int(d) * w for d, w in zip(first_nine, _WEIGHTS, strict=True))
    digit = 11 - total % 11
    if digit == 11:
        return 0
    if digit == 10:
        return None
    return digit


def is_valid(number: str) -> bool:
    """True for ten digits whose last is the modulus-11 check digit of the others."""
    if len(number) != 10 or not number.isascii() or not number.isdigit():
        return False
    return check_digit(number[:9]) == int(number[9])


def synthetic(rng: random.Random) -> str:
    """A valid NHS number in the test range, drawn from ``rng``."""
    while True:
        first_nine = TEST_PREFIX + f"{rng.randrange(1_000_000):06d}"
        digit = check_digit(first_nine)
        if digit is not None:
            return first_nine + str(digit)


def numbered(seed: int) -> str:
    """The valid test-range NHS number at or after ``999`` followed by ``seed`` (0 to 999,999).

    Deterministic, for feeds that number their patients: the same seed always gives
    the same number. A seed whose nine digits have no check digit takes the next one's.
    """
    if not 0 <= seed < 1_000_000:
        raise ValueError("seed must be from 0 to 999,999")
    n = int(TEST_PREFIX) * 1_000_000 + seed
    while True:
        first_nine = f"{n:09d}"
        digit = check_digit(first_nine)
        if digit is not None:
            return first_nine + str(digit)
        n += 1


def corrupt(number: str, rng: random.Random) -> str:
    """A copy of ``number`` with two adjacent digits swapped or one digit changed,
    chosen so that it fails the modulus-11 check."""
    while True:
        digits = list(number)
        i = rng.randrange(3, 9)
        if rng.random() < 0.5 and digits[i] != digits[i + 1]:
            digits[i], digits[i + 1] = digits[i + 1], digits[i]
        else:
            digits[i] = str((int(digits[i]) + rng.randrange(1, 10)) % 10)
        candidate = "".join(digits)
        if not is_valid(candidate):
            return candidate
