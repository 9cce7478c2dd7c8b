"""MSH-18 character sets: from HL7 table 0211 names to Python codecs, and decoding.

The rule, in order: the character set MSH-18 declares (when carebus knows it and
the bytes are valid in it); else UTF-8 when the bytes are valid UTF-8; else the
configured fallback (``iso-8859-1`` by default, which can decode any byte). A
UTF-16 byte-order mark (or a UTF-16 ``MSH``) wins over everything.
"""

from __future__ import annotations

import codecs
import functools
import re

from carebus.errors import ConfigError

DEFAULT_FALLBACK = "iso-8859-1"

#: HL7 table 0211 (and common spellings seen in feeds) → Python codec name.
_TABLE_0211: dict[str, str] = {
    "ASCII": "ascii",
    "US-ASCII": "ascii",
    "ISO IR6": "ascii",
    "ISO IR100": "iso-8859-1",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_2",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}

_ISO_8859 = re.compile(r"(?:ISO[- _]?)?8859[/_-](\d{1,2})")

#: Codecs whose bytes are not a superset of ASCII: a message whose ``MSH`` could be
#: read byte by byte cannot be in one of these, whatever MSH-18 says.
_NOT_ASCII_COMPATIBLE = frozenset(
    {"utf_16", "utf_16_le", "utf_16_be", "utf_32", "utf_32_le", "utf_32_be"}
)

_UTF16_LE_MSH = "MSH".encode("utf-16-le")
_UTF16_BE_MSH = "MSH".encode("utf-16-be")


@functools.lru_cache(maxsize=256)
def codec_for(name: str) -> str | None:
    """The Python codec (its canonical name) for an MSH-18 value; ``None`` if empty or unknown."""
    key = " ".join(name.strip().upper().split())
    if not key:
        return None
    known = _TABLE_0211.get(key)
    if known is not None:
        return codecs.lookup(known).name
    match = _ISO_8859.fullmatch(key)
    if match is not None:
        key = f"iso8859_{int(match.group(1))}"
    try:
        info = codecs.lookup(key)
    except LookupError:
        return None
    if (
        not getattr(info, "_is_text_encoding", True)
        or info.name.replace("-", "_") in _NOT_ASCII_COMPATIBLE
    ):
        return None
    return info.name


@functools.lru_cache(maxsize=32)
def _check_fallback(fallback: str) -> str:
    try:
        return codecs.lookup(fallback).name
    except LookupError as exc:
        raise ConfigError(f"unknown fallback character set {fallback!r}") from exc


def utf16_codec(data: bytes) -> str | None:
    """``utf-16`` when ``data`` starts with a UTF-16 byte-order mark or a UTF-16 ``MSH``."""
    head = data[:6]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if head == _UTF16_LE_MSH:
        return "utf-16-le"
    if head == _UTF16_BE_MSH:
        return "utf-16-be"
    return None


def decode(data: bytes, declared: str | None, fallback: str = DEFAULT_FALLBACK) -> tuple[str, str]:
    """Decode ``data``: the declared codec, else UTF-8 if valid, else the fallback.

    Returns the text and the codec used. Never raises for bad bytes (the fallback
    replaces what it cannot decode); raises :class:`ConfigError` for an unknown
    fallback codec.
    """
    if declared is not None:
        try:
            return data.decode(declared), declared
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    codec = _check_fallback(fallback)
    return data.decode(codec, "replace"), codec
