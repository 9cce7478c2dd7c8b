"""HL7 v2 escape sequences: ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\P\\``, ``\\Xhh..\\`` and ``\\.br\\``.

:func:`unescape` resolves them in one component (or sub-component) value, after the
value has been split on the delimiters. Unknown sequences (``\\H\\``, ``\\Zxx\\``,
``\\.sp\\``, ...) and an escape character without a closing one are left as they are.
:func:`escape` is the inverse for building messages (ACKs): delimiters become escape
sequences and line breaks become ``\\.br\\``.
"""

from __future__ import annotations

import functools

from connectors.hl7.charset import DEFAULT_FALLBACK, decode
from connectors.hl7.encoding import Encoding

_HEX = frozenset("0123456789abcdefABCDEF")


@functools.lru_cache(maxsize=128)
def _singles(enc: Encoding) -> dict[str, str]:
    """The one-letter escape sequences of ``enc`` and what they stand for (built once)."""
    pairs = (
        ("F", enc.field),
        ("S", enc.component),
        ("T", enc.subcomponent),
        ("R", enc.repetition),
        ("E", enc.escape),
        ("P", enc.truncation),
    )
    return {code: char for code, char in pairs if char}


def _resolve(seq: str, enc: Encoding, charset: str | None, fallback: str) -> str | None:
    if len(seq) == 1:
        return _singles(enc).get(seq)
    if seq == ".br":
        return "\n"
    if seq[0] == "X" and len(seq) % 2 == 1 and _HEX.issuperset(seq[1:]):
        return decode(bytes.fromhex(seq[1:]), charset, fallback)[0]
    return None


def unescape(
    value: str,
    encoding: Encoding,
    charset: str | None = None,
    fallback: str = DEFAULT_FALLBACK,
) -> str:
    """``value`` with its escape sequences resolved.

    ``\\Xhh..\\`` bytes are decoded with ``charset`` (the message's character set),
    else as UTF-8 when valid, else with ``fallback``.
    """
    esc = encoding.escape
    if not esc or esc not in value:
        return value
    parts = value.split(esc)
    out = [parts[0]]
    count = len(parts)
    i = 1
    while i < count:
        seq = parts[i]
        if i + 1 == count:  # an escape character that is never closed
            out.append(esc)
            out.append(seq)
            break
        resolved = _resolve(seq, encoding, charset, fallback) if seq else None
        if resolved is None:
            out.append(esc)
            out.append(seq)
            out.append(esc)
        else:
            out.append(resolved)
        out.append(parts[i + 1])
        i += 2
    return "".join(out)


def escape(value: str, encoding: Encoding) -> str:
    """``value`` with delimiters escaped and line breaks as ``\\.br\\``, ready for a field."""
    esc = encoding.escape
    if not esc:
        return value
    out = value.replace(esc, f"{esc}E{esc}")
    for char, code in (
        (encoding.field, "F"),
        (encoding.component, "S"),
        (encoding.subcomponent, "T"),
        (encoding.repetition, "R"),
        (encoding.truncation, "P"),
    ):
        if char:
            out = out.replace(char, f"{esc}{code}{esc}")
    if "\r" in out or "\n" in out:
        out = out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{esc}.br{esc}")
    return out
