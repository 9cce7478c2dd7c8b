"""NHS numbers: ten digits whose last is a modulus-11 check digit."""

from __future__ import annotations

_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)
_SEPARATORS = str.maketrans("", "", " -")


def normalise_nhs_number(value: str) -> str | None:
    """The ten digits of ``value`` when it is a valid NHS number, else None.

    Spaces and hyphens are allowed between digits (``943 476 5919``); anything else
    makes the value invalid. Valid means the modulus-11 check digit matches: the
    first nine digits weighted 10 down to 2, summed, and ``11 - sum % 11`` (11 → 0;
    10 is never valid) equals the tenth digit.
    """
    digits = value.translate(_SEPARATORS)
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return None
    total = sum(int(d) * w for d, w in zip(digits, _WEIGHTS, strict=False))
    check = 11 - total % 11
    if check == 11:
        check = 0
    if check == 10 or check != int(digits[9]):
        return None
    return digits


def is_valid_nhs_number(value: str) -> bool:
    """True when ``value`` is a valid NHS number (see :func:`normalise_nhs_number`)."""
    return normalise_nhs_number(value) is not None
