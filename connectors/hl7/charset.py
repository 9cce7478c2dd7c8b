"""MSH-18 character sets: from HL7 table 0211 names to Python codecs, and decoding.

The rule, in order: the character set MSH-18 declares (when carebus knows it and
the bytes are valid in it); else UTF-8 when the bytes are valid UTF-8; else the
configured fallback (``iso-8859-1`` by default, which can decode any byte). A
UTF-16 byte-order mark (or a UTF-16 ``MSH``) wins over everything.

An MSH-18 that names a codec which cannot carry HL7 (its ASCII letters, digits and
delimiters do not decode to themselves, or it cannot decode at all: EBCDIC code
pages, UTF-7, HZ, Shift JIS 2004, Python's ``undefined``) is *unusable*: the parser
rejects the message (:func:`check_declared`) instead of guessing. :func:`codec_for`
gives ``None`` for it, so no other path ever decodes with it.
"""

from __future__ import annotations

import codecs
import functools
import re
import warnings

from carebus.errors import ConfigError, Unparseable

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

#: What a codec must decode to itself to carry HL7: every printable ASCII character,
#: line ends, escape sequences, and a long run without dots (the ``idna`` codec).
_PROBE = (
    b"MSH|^~\\&|APP|FAC|20240105103000+0000||ADT^A01|C-1.2_3|P|2.5.1\r\n\t"
    + bytes(range(0x20, 0x7F))
    + b"\\.br\\\\T\\\\N\\\\X0D0A\\"
    + b"x" * 80
)

_UTF16_LE_MSH = "MSH".encode("utf-16-le")
_UTF16_BE_MSH = "MSH".encode("utf-16-be")


def codec_for(name: str) -> str | None:
    """The Python codec (its canonical name) for an MSH-18 value; ``None`` if empty,
    unknown or unusable (see the module docstring)."""
    return _resolve(name)[0]


def check_declared(name: str, control_id: str | None = None) -> None:
    """:class:`~carebus.errors.Unparseable` when MSH-18 ``name`` names an unusable codec.

    The detail names the field, never its value.
    """
    if _resolve(name)[1]:
        raise Unparseable(
            "MSH-18 names a character set that cannot carry HL7",
            control_id=control_id or None,
            field="MSH-18",
        )


@functools.lru_cache(maxsize=256)
def _resolve(name: str) -> tuple[str | None, bool]:
    """``(codec, unusable)`` for an MSH-18 value."""
    key = " ".join(name.strip().upper().split())
    if not key:
        return None, False
    known = _TABLE_0211.get(key)
    if known is not None:
        return codecs.lookup(known).name, False
    match = _ISO_8859.fullmatch(key)
    if match is not None:
        key = f"iso8859_{int(match.group(1))}"
    try:
        info = codecs.lookup(key)
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return None, False
    if (
        not getattr(info, "_is_text_encoding", True)
        or info.name.replace("-", "_") in _NOT_ASCII_COMPATIBLE
    ):
        return None, False
    if not usable(info.name):
        return None, True
    return info.name, False


@functools.lru_cache(maxsize=64)
def usable(codec: str) -> bool:
    """Whether ``codec`` decodes HL7's ASCII (:data:`_PROBE`) to itself."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unicode_escape warns about "\\&"
            return _PROBE.decode(codec) == _PROBE.decode("ascii")
    except Exception:  # a codec may raise anything: UnicodeError, LookupError, ...
        return False


@functools.lru_cache(maxsize=32)
def _check_fallback(fallback: str) -> str:
    try:
        name = codecs.lookup(fallback).name
    except LookupError as exc:
        raise ConfigError(f"unknown fallback character set {fallback!r}") from exc
    try:
        b"\xff".decode(name, "replace")
    except Exception as exc:  # the undefined codec, a non-text codec
        raise ConfigError(f"fallback character set {fallback!r} cannot decode text") from exc
    return name


def check_fallback(fallback: str) -> str:
    """The canonical codec name of ``fallback``; :class:`ConfigError` if it cannot decode."""
    return _check_fallback(fallback)


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

    Returns the text and the codec used. Never raises for bad bytes, nor for a
    declared codec that fails in any other way (the fallback replaces what it
    cannot decode); raises :class:`ConfigError` for an unusable fallback codec.
    """
    if declared is not None:
        try:
            return data.decode(declared), declared
        except (ValueError, LookupError):  # UnicodeError (a ValueError): not these bytes
            pass
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    codec = _check_fallback(fallback)
    return data.decode(codec, "replace"), codec
