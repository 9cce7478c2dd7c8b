"""The encoding characters of one message, read from MSH-1 and MSH-2."""

from __future__ import annotations

import functools
from typing import NamedTuple

from carebus.errors import Unparseable


class Encoding(NamedTuple):
    """A message's delimiters. A delimiter MSH-2 does not give is ``""`` (never used)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def msh2(self) -> str:
        """The encoding characters as written in MSH-2 (or FHS-2, BHS-2)."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation

    @classmethod
    def from_header(cls, field: str, msh2: str) -> Encoding:
        """The encoding from MSH-1 and MSH-2 (cached); see :func:`encoding_from_header`."""
        return encoding_from_header(field, msh2)


@functools.lru_cache(maxsize=128)
def encoding_from_header(field: str, msh2: str) -> Encoding:
    """The encoding from MSH-1 and MSH-2; :class:`Unparseable` when they cannot be used.

    MSH-2 has four characters (component, repetition, escape, sub-component) or
    five (plus the truncation character of HL7 2.7+). Shorter MSH-2 values are
    tolerated: the missing delimiters are simply not used.
    """
    if len(field) != 1 or not _is_delimiter(field):
        raise Unparseable("MSH-1 field separator is missing or not a delimiter character")
    if not msh2:
        raise Unparseable("MSH-2 encoding characters are missing")
    if len(msh2) > 5:
        raise Unparseable(f"MSH-2 has {len(msh2)} encoding characters; expected 4 or 5")
    chars = field + msh2
    if len(set(chars)) != len(chars) or not all(map(_is_delimiter, msh2)):
        raise Unparseable("MSH-2 encoding characters are repeated or not delimiter characters")
    parts = [*msh2, "", "", "", ""]
    return Encoding(field, parts[0], parts[1], parts[2], parts[3], parts[4])


def _is_delimiter(char: str) -> bool:
    return char.isprintable() and not char.isalnum() and not char.isspace()


DEFAULT_ENCODING = Encoding()
