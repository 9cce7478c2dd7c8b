"""NHS numbers: ten digits whose last is a modulus-11 check digit."""

from __future__ import annotations

_SEPARATORS = str.maketrans("", "", " -")


def normalise_nhs_number(value: str) -> str | None:
    """The ten digits of ``value`` when it is a valid NHS number, else None.

    Spaces and hyphens are allowed between digits (``943 476 5919``); anything else
    makes the value invalid. Valid means the modulus-11 check digit matches: the
    first nine digits weighted 10 down to 2, summed; ``11 - sum % 11`` (11 becomes
    0, and 10 is never valid) must equal the tenth digit.
    """
    digits = value if len(value) == 10 else value.translate(_SEPARATORS)
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return None
    d = [c - 48 for c in digits.encode("ascii")]
    total = (
        10 * d[0]
        + 9 * d[1]
        + 8 * d[2]
        + 7 * d[3]
        + 6 * d[4]
        + 5 * d[5]
        + 4 * d[6]
        + 3 * d[7]
        + 2 * d[8]
    )
    check = (11 - total % 11) % 11
    if check == 10 or check != d[9]:
        return None
    return digits


def is_valid_nhs_number(value: str) -> bool:
    """True when ``value`` is a valid NHS number (see :func:`normalise_nhs_number`)."""
    return normalise_nhs_number(value) is not None
