"""Splitting feeds into messages: MLLP frames, plain files and FHS/BHS batches.

:func:`iter_feed` reads a whole feed file. It is MLLP when its first byte (after a
UTF-8 byte-order mark and whitespace) is the start block ``0x0B``; frames end with
``0x1C`` and, usually, ``0x0D`` (a missing ``0x0D`` and whitespace between frames
are tolerated). Otherwise it is plain text: a message starts at each line that
starts with ``MSH``; segments end with CR, LF or CRLF. In both, ``FHS``/``BHS``
lines open a batch: their fields become the ``batch`` metadata of the messages
that follow (``{"FHS-4": ..., "BHS-11": ...}``), and ``BTS``/``FTS`` lines close
it; none of these lines is part of a message.

Nothing is dropped silently: bytes that belong to no message (junk before, between
or after messages, a frame that never ends) become a :class:`FeedItem` of their own
whose ``raw`` :func:`~connectors.hl7.parse_message` rejects as
:class:`~carebus.errors.Unparseable`, so the caller reports it like any bad message.

:class:`MllpDecoder` is the incremental version for sockets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from carebus.errors import FramingError

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\r"
_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n"

_KINDS = (b"MSH", b"FHS", b"BHS", b"BTS", b"FTS")
_NEWLINES = b"\r\n"
#: Searches that stop at the first match, so that every scan is linear in what it
#: passes over (two ``find`` calls, one per byte, would each run to the end).
_LINE_END = re.compile(rb"[\r\n]")
_NOT_WHITESPACE = re.compile(rb"[^ \t\r\n]")


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One message (or one run of unusable bytes) found in a feed.

    ``position`` is the 1-based index of the item in the feed, ``offset`` the byte
    offset of ``raw`` in it, ``batch`` the FHS/BHS header fields of the batch the
    message belongs to (``None`` outside a batch).
    """

    position: int
    offset: int
    raw: bytes
    batch: dict[str, str] | None = None


def frame(payload: bytes) -> bytes:
    """``payload`` wrapped in an MLLP frame (``0x0B`` payload ``0x1C 0x0D``)."""
    if END_BLOCK in payload or START_BLOCK in payload:
        raise FramingError("payload contains an MLLP block character")
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


def iter_feed(data: bytes) -> Iterator[FeedItem]:
    """The messages in a feed file, in order (see the module documentation)."""
    start = 3 if data.startswith(_BOM) else 0
    first = _skip_whitespace(data, start)
    pieces = (
        _mllp_pieces(data, first)
        if data[first : first + 1] == START_BLOCK
        else _plain_pieces(data, start, len(data))
    )
    for position, (offset, raw, batch) in enumerate(pieces, start=1):
        yield FeedItem(position, offset, raw, batch)


_Piece = tuple[int, bytes, "dict[str, str] | None"]


def _skip_whitespace(data: bytes, index: int) -> int:
    found = _NOT_WHITESPACE.search(data, index)
    return len(data) if found is None else found.start()


def _mllp_pieces(data: bytes, index: int) -> Iterator[_Piece]:
    end = len(data)
    close = -2  # the next end block after the frame start, once searched; -1: none left
    while True:
        index = _skip_whitespace(data, index)
        if index >= end:
            return
        if data[index : index + 1] != START_BLOCK:
            # Bytes outside a frame: up to the next start block is one junk item.
            following = data.find(START_BLOCK, index)
            stop = end if following < 0 else following
            yield index, data[index:stop].rstrip(_WHITESPACE), None
            index = stop
            continue
        if close == -2 or 0 <= close <= index:
            # Searched again only once passed: start blocks without end blocks cost
            # one scan in all, not one each.
            close = data.find(END_BLOCK, index + 1)
        following = data.find(START_BLOCK, index + 1, end if close < 0 else close)
        if close < 0 or following >= 0:
            # A frame that never ends: keep the start block so that it is rejected.
            stop = end if close < 0 else following
            yield index, data[index:stop].rstrip(_WHITESPACE), None
            index = stop
            continue
        yield from _plain_pieces(data, index + 1, close)
        index = close + 1


def _markers(data: bytes, start: int, end: int) -> list[tuple[int, int, bytes]]:
    """Lines in ``data[start:end]`` that start a message or a batch header/trailer.

    Each is ``(line start, keyword start, keyword)``; the two differ by a byte-order
    mark (files concatenated with ``cat``). ``bytes.find`` keeps this at C speed.
    """
    found = []
    for kind in _KINDS:
        pos = data.find(kind, start, end)
        while pos >= 0:
            after = data[pos + 3 : pos + 4]
            if after and not after.isalnum() and after not in b"\r\n":
                line = pos - 3 if pos - 3 >= start and data[pos - 3 : pos] == _BOM else pos
                if line == start or data[line - 1] in _NEWLINES:
                    found.append((line, pos, kind))
            pos = data.find(kind, pos + 3, end)
    found.sort()
    return found


def _plain_pieces(data: bytes, start: int, end: int) -> Iterator[_Piece]:
    """Messages and junk in ``data[start:end]``, plain (unframed) text."""
    batch: dict[str, str] | None = None
    cursor = start  # everything before ``cursor`` has been handed out
    markers = _markers(data, start, end)
    for index, (line, begin, kind) in enumerate(markers):
        if cursor < line:
            yield from _junk(data, cursor, line)
        if kind == b"MSH":
            stop = markers[index + 1][0] if index + 1 < len(markers) else end
            yield begin, data[begin:stop].rstrip(_WHITESPACE), batch
            cursor = stop
            continue
        found = _LINE_END.search(data, begin, end)
        line_end = end if found is None else found.start()
        if kind in (b"FHS", b"BHS"):
            batch = _header_fields(data[begin:line_end], kind.decode(), batch)
        cursor = line_end
    if cursor < end:
        yield from _junk(data, cursor, end)


def _junk(data: bytes, start: int, end: int) -> Iterator[_Piece]:
    chunk = data[start:end]
    stripped = chunk.strip(_WHITESPACE)
    if stripped:
        yield start + chunk.index(stripped[:1]), stripped, None


def _header_fields(line: bytes, kind: str, batch: dict[str, str] | None) -> dict[str, str]:
    """The non-empty fields of an FHS/BHS line, keyed ``FHS-4``; a BHS keeps the FHS keys."""
    kept = {k: v for k, v in (batch or {}).items() if kind == "BHS" and k.startswith("FHS-")}
    text = _decode_header(line)
    separator = text[3:4]
    fields = text.split(separator)
    kept[f"{kind}-1"] = separator
    for number, value in enumerate(fields[1:], start=2):
        if value:
            kept[f"{kind}-{number}"] = value
    return kept


def _decode_header(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("iso-8859-1")


class MllpDecoder:
    """Incremental MLLP: :meth:`feed` bytes as they arrive, get back complete frames.

    Whitespace between frames (the ``0x0D`` after ``0x1C``, keep-alive newlines) is
    ignored. Any other byte outside a frame, or a frame larger than
    ``max_frame_bytes``, raises :class:`FramingError` (its message gives byte
    counts, never bytes); the decoder then discards what it buffered, and the
    connection should be closed.
    """

    def __init__(self, max_frame_bytes: int = 1_048_576) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._scanned = 0  # bytes of the current frame already searched for 0x1C

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held so far."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget any partial frame."""
        self._buffer.clear()
        self._in_frame = False
        self._scanned = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The frames completed by ``data`` (payloads, without the block characters)."""
        frames: list[bytes] = []
        view = memoryview(data)
        index = 0
        end = len(data)
        while index < end:
            if not self._in_frame:
                index = _skip_whitespace(data, index)
                if index >= end:
                    break
                if data[index] != START_BLOCK[0]:
                    following = data.find(START_BLOCK, index)
                    count = (end if following < 0 else following) - index
                    self.reset()
                    raise FramingError(f"{count} bytes outside an MLLP frame", frames=frames)
                self._in_frame = True
                index += 1
                continue
            close = data.find(END_BLOCK, index)
            stop = end if close < 0 else close
            if len(self._buffer) + (stop - index) > self.max_frame_bytes:
                size = len(self._buffer) + (stop - index)
                self.reset()
                raise FramingError(
                    f"MLLP frame of at least {size} bytes exceeds the limit of "
                    f"{self.max_frame_bytes} bytes",
                    frames=frames,
                )
            self._buffer += view[index:stop]
            if close < 0:
                break
            frames.append(bytes(self._buffer))
            self._buffer.clear()
            self._in_frame = False
            index = close + 1
        return frames
