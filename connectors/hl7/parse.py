"""``parse_message``: bytes or text to a :class:`Message`, tolerant and fast.

Decoding: a leading UTF-8 byte-order mark is dropped; MSH-18 is read from the raw
bytes of the MSH segment before decoding, and the bytes are decoded by it, else as
UTF-8 when valid, else with ``fallback_charset`` (see :mod:`connectors.hl7.charset`).
Pure-ASCII bytes are decoded directly (every supported character set agrees on them).

Segments end with CR, LF or CRLF; blank lines are skipped. A line that does not
start like a segment (three upper-case letters or digits, then the field separator)
is a line break inside the previous segment's data (some senders put raw line feeds
in report text) and is kept there as ``"\\n"``.

Rejected as :class:`~carebus.errors.Unparseable`, with a reason and never any
content: empty input; no ``MSH`` first; unusable MSH-1/MSH-2; an MSH-18 that names
a character set which cannot carry HL7 (:func:`~connectors.hl7.charset.check_declared`,
also for text that needs no decoding); MLLP block bytes
(``0x0B``, ``0x1C``: an unframed or truncated frame); several MSH segments or batch
segments (FHS/BHS/BTS/FTS) in one payload, which would otherwise lose messages.
"""

from __future__ import annotations

from carebus.errors import Unparseable
from connectors.hl7.charset import (
    DEFAULT_FALLBACK,
    check_declared,
    codec_for,
    decode,
    utf16_codec,
)
from connectors.hl7.encoding import Encoding, encoding_from_header
from connectors.hl7.message import Message

_BOM = b"\xef\xbb\xbf"
_LEADING = " \t\r\n\ufeff"
_BATCH_SEGMENTS = frozenset({"FHS", "BHS", "BTS", "FTS"})
#: Segment names seen so far (at most 36 ** 3): a set look-up is cheaper than the test.
_SEGMENT_NAMES: set[str] = set()


def peek_msh18(data: bytes) -> str:
    """MSH-18 (first repetition, first component) read from raw bytes starting ``MSH``."""
    end = len(data)
    for terminator in (b"\r", b"\n"):
        found = data.find(terminator, 0, end)
        if found >= 0:
            end = found
    fs = data[3:4]
    if not fs:
        return ""
    fields = data[:end].split(fs, 18)
    if len(fields) < 18:
        return ""
    value = fields[17]
    for sep in (data[5:6], data[4:5]):  # repetition, then component separator
        if sep and sep != fs:
            value = value.split(sep, 1)[0]
    return value.decode("ascii", "replace")


def parse_message(raw: bytes | str, *, fallback_charset: str = DEFAULT_FALLBACK) -> Message:
    """Parse one HL7 v2 message; :class:`~carebus.errors.Unparseable` when it is not one.

    ``raw`` is the message without MLLP framing. Error messages never contain
    message content.
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        data = bytes(raw)
        if data.isascii():
            text = data.decode("ascii")
            charset: str | None = "ascii"
        else:
            text, charset = _decode(data, fallback_charset)
    elif isinstance(raw, str):
        text, charset = raw, None
    else:
        raise TypeError(f"parse_message takes bytes or str, not {type(raw).__name__}")

    if not text.startswith("MSH"):
        text = text.lstrip(_LEADING)
        if not text.startswith("MSH"):
            raise Unparseable(_not_msh_reason(text))
    if "\x0b" in text or "\x1c" in text:
        raise Unparseable("MLLP framing bytes inside the message (unframed or truncated frame)")

    fs = text[3:4]
    end = text.find(fs, 4) if fs else -1
    has_lf = "\n" in text
    head_end = text.find("\r", 4)
    if head_end < 0:
        head_end = len(text)
    if has_lf:
        found = text.find("\n", 4, head_end)
        if found >= 0:
            head_end = found
    msh2 = text[4:end] if 0 <= end < head_end else text[4:head_end]
    encoding = encoding_from_header(fs, msh2)
    _check_msh18(text[:head_end], encoding)

    if has_lf:
        text = (
            text.replace("\r\n", "\r").replace("\n", "\r")
            if "\r" in text
            else text.replace("\n", "\r")
        )
    names, lines = _segments(text.split("\r"), fs)
    message = Message(names, lines, encoding, charset=charset, fallback_charset=fallback_charset)
    headers = names.count("MSH")
    if headers > 1:
        raise Unparseable(
            f"{headers} MSH segments: several messages in one payload (split feeds with iter_feed)",
            control_id=message.control_id or None,
        )
    if not _BATCH_SEGMENTS.isdisjoint(names):
        raise Unparseable(
            "batch segments (FHS/BHS/BTS/FTS) inside a message (split feeds with iter_feed)",
            control_id=message.control_id or None,
        )
    return message


def _segments(pieces: list[str], fs: str) -> tuple[list[str], list[str]]:
    """Segment names and texts from the CR-separated ``pieces`` of a message.

    A piece that does not start like a segment continues the previous one (joined
    with ``"\\n"``); blank pieces are skipped. Each segment's text is built once, by
    one join of its pieces, so the work is linear in the message however many
    continuation lines it has. ``pieces[0]`` is the MSH segment.
    """
    names: list[str] = []
    lines: list[str] = []
    known = _SEGMENT_NAMES
    more: list[str] = []  # the last segment and its continuation lines, when it has some
    for line in pieces:
        if line[3:4] == fs or len(line) == 3:
            name = line[:3]
            if name in known or _is_segment_name(name):
                if more:
                    lines[-1] = "\n".join(more)
                    more = []
                names.append(name)
                lines.append(line)
                continue
        if not line or line.isspace():
            continue
        if not more:
            more.append(lines[-1])
        more.append(line)
    if more:
        lines[-1] = "\n".join(more)
    return names, lines


def _check_msh18(msh: str, encoding: Encoding) -> None:
    """:class:`Unparseable` when MSH-18 (read from the MSH line ``msh``) is unusable."""
    header = msh.split(encoding.field, 18)
    if len(header) > 17 and header[17]:
        declared = header[17]
        for sep in (encoding.repetition, encoding.component):
            if sep:
                declared = declared.split(sep, 1)[0]
        control_id = header[9]
        if encoding.component:
            control_id = control_id.split(encoding.component, 1)[0]
        check_declared(declared, control_id)


def _is_segment_name(name: str) -> bool:
    """Three upper-case ASCII letters or digits (remembered in :data:`_SEGMENT_NAMES`)."""
    if name.isalnum() and name.isascii() and name.isupper():
        _SEGMENT_NAMES.add(name)
        return True
    return False


def _decode(data: bytes, fallback: str) -> tuple[str, str]:
    utf16 = utf16_codec(data)
    if utf16 is not None:
        text = data.decode(utf16, "replace")
        return text.lstrip("\ufeff"), utf16
    if data.startswith(_BOM):
        data = data[3:]
    start = 0
    if not data.startswith(b"MSH"):
        start = data.find(b"MSH")
        if start < 0 or data[:start].strip(b" \t\r\n"):
            start = 0
    declared = codec_for(peek_msh18(data[start:])) if data.startswith(b"MSH", start) else None
    return decode(data, declared, fallback)


def _not_msh_reason(text: str) -> str:
    if not text:
        return "empty message"
    if text.startswith(("FHS", "BHS")):
        return "a batch (FHS/BHS), not a single message: split it into messages first"
    if text[:1] == "\x0b":
        return "MLLP framing bytes inside the message (unframed or truncated frame)"
    return "does not start with an MSH segment"
