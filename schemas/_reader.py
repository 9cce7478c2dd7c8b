"""A fast Avro binary reader, generated once per schema.

The counterpart of :mod:`schemas._writer`: fastavro's generic reader dispatches on
the schema for every value, which for carebus's records, with dozens of nullable
fields, costs far more than the bytes themselves. :func:`compile_reader` generates
one straight-line Python function per schema for the shapes carebus's schemas use
(records, ``["null", T]`` unions, strings, ints, longs, booleans, enums, arrays,
``timestamp-millis`` and ``date``); any other shape raises :class:`Unsupported`, and
the caller falls back to fastavro. It returns what fastavro returns: the same dicts,
keys in schema order, ``str``/``int``/``bool``/``None``/``list`` values, enum
symbols as ``str``, timezone-aware UTC ``datetime`` and ``date``; the tests check it
for every schema.

The generated code refers only to constants it is given (never to text from the
schema: field names are passed through ``repr``). Varints, lengths, union and enum
indexes take a table lookup when they fit in one byte (nearly always), and a helper
otherwise.

Corrupt input raises ``ValueError`` (including ``UnicodeDecodeError``),
``IndexError``, ``EOFError`` or ``OverflowError``, never another value: negative or
oversized lengths and counts, out-of-range union branches, enum symbols and
booleans, varints longer than 64 bits, and bodies that end early. Bytes after the
body are not read: the reader returns where the body ended.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from schemas._codegen import Emitter, Unsupported, define, require_record

#: Reads the record whose Avro binary encoding starts at ``pos`` in ``data`` (which
#: must be ``bytes``); returns the record and the position just after it.
Read = Callable[[bytes, int], tuple[dict[str, Any], int]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def decode_long(data: bytes, pos: int) -> tuple[int, int]:
    """An Avro ``long``/``int`` (base-128 varint, then zig-zag) and the position after it."""
    byte = data[pos]
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
        pos += 1
        byte = data[pos]
        n |= (byte & 0x7F) << shift
        shift += 7
    value = (n >> 1) ^ -(n & 1)
    if not _LONG_MIN <= value <= _LONG_MAX:
        raise ValueError("varint out of the range of a long")
    return value, pos + 1


#: One-byte values by the byte: zig-zag decoded, or None when more bytes follow.
_ONE = tuple((b >> 1) ^ -(b & 1) if b < 0x80 else None for b in range(256))
#: One-byte lengths and counts: only the non-negative ones, None otherwise.
_SIZE = tuple(b >> 1 if b < 0x80 and not b & 1 else None for b in range(256))
_BOOLEANS = (False, True)


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """A length written in more than one byte (or negative), and its last byte's position.

    The generated code goes on as after a one-byte length: the string starts one on.
    """
    size, end = decode_long(data, pos)
    if size < 0:
        raise ValueError("negative length")
    return size, end - 1


def _count(data: bytes, pos: int) -> tuple[int, int]:
    """An array block's item count; a negative count is followed by the block's size."""
    count, pos = decode_long(data, pos)
    if count < 0:
        count = -count
        size, pos = decode_long(data, pos)
        if size < 0:
            raise ValueError("negative block size")
    if count > len(data) - pos:  # every item takes at least one byte
        raise ValueError("array count beyond the end of the data")
    return count, pos


def _branch(data: bytes, pos: int) -> tuple[int, int]:
    """A union index written in more than one byte, as the one byte it stands for.

    Returns the byte (0 for null, 2 for the value) and the position of the index's
    last byte, so that the generated code goes on as after a one-byte index.
    """
    index, pos = decode_long(data, pos)
    if index not in (0, 1):
        raise ValueError("union branch out of range")
    return index * 2, pos - 1


def _symbol(data: bytes, pos: int, symbols: tuple[str, ...]) -> tuple[str, int]:
    index, pos = decode_long(data, pos)
    if not 0 <= index < len(symbols):
        raise ValueError("enum symbol out of range")
    return symbols[index], pos


#: Timestamps by their encoding: the same times recur within a record (event, message
#: and received time) and across a stream (one received time per batch). Only
#: six-byte varints are kept (every time from 1970-07 to 2039 takes six bytes), so a
#: six-byte key is a whole varint.
_TIMESTAMPS: dict[bytes, datetime] = {}
_TIMESTAMPS_MAX = 4096
_TIMESTAMP_WIDTH = 6


def timestamp_millis(millis: int) -> datetime:
    """fastavro's ``timestamp-millis``: the UTC epoch plus a number of milliseconds."""
    return _EPOCH + timedelta(0, 0, 0, millis)


def _timestamp(data: bytes, pos: int) -> tuple[datetime, int]:
    """A ``timestamp-millis`` not in the cache, and the position after it."""
    millis, end = decode_long(data, pos)
    moment = timestamp_millis(millis)
    if end - pos == _TIMESTAMP_WIDTH:
        if len(_TIMESTAMPS) >= _TIMESTAMPS_MAX:
            _TIMESTAMPS.clear()
        _TIMESTAMPS[data[pos:end]] = moment
    return moment, end


_HELPERS: dict[str, Any] = {
    "_long": decode_long,
    "_len": _length,
    "_count": _count,
    "_branch": _branch,
    "_symbol": _symbol,
    "_ts": _timestamp,
    "_tsget": _TIMESTAMPS.get,
    "_ordinal": date.fromordinal,
    "_ONE": _ONE,
    "_SIZE": _SIZE,
    "_BOOL": _BOOLEANS,
}


def compile_reader(schema: Any) -> Read:
    """A reader for a self-contained JSON record schema; :class:`Unsupported` otherwise."""
    require_record(schema)
    gen = _Generator()
    result = gen.node(schema, 1, ())
    lines = [
        "def read(d, p):",
        *gen.lines,
        "    if p > len(d):",
        "        raise EOFError('the body ends early')",
        f"    return {result}, p",
        "",
    ]
    reader: Read = define(lines, "read", _HELPERS, gen, f"avro reader {schema.get('name')}")
    return reader


class _Generator(Emitter):
    """Emits the statements that read a value at ``p`` in ``d``, advancing ``p``.

    :meth:`node` returns an expression for the value, valid after its statements
    (a local, or for a record a dict display of locals); ``n`` and ``b`` are scratch.
    """

    def node(self, schema: Any, indent: int, stack: tuple[str, ...]) -> str:
        if isinstance(schema, list):
            return self.union(schema, indent, stack)
        if isinstance(schema, str) and schema in self.named:
            schema = self.named[schema]
        kind = schema.get("type") if isinstance(schema, dict) else schema
        if kind in ("record", "enum"):
            self.named[_full_name(schema)] = schema
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if logical == "timestamp-millis" and kind == "long":
            value = self.var()
            fast = f"_tsget(d[p:p + {_TIMESTAMP_WIDTH}])"
            self.lookup(value, fast, "_ts(d, p)", indent, width=_TIMESTAMP_WIDTH)
            return value
        if logical == "date" and kind == "int":
            value = self.long(indent)
            self.line(indent, f"{value} = _ordinal({value} + {_EPOCH_ORDINAL})")
            return value
        if logical is not None:
            raise Unsupported(f"logical type {logical}")
        if kind == "string":
            return self.string(indent)
        if kind in ("long", "int"):
            return self.long(indent)
        if kind == "boolean":
            value = self.var()
            self.line(indent, f"{value} = _BOOL[d[p]]")
            self.line(indent, "p += 1")
            return value
        if kind == "enum":
            return self.enum(schema, indent)
        if kind == "array":
            return self.array(schema, indent, stack)
        if kind == "record":
            return self.record(schema, indent, stack)
        raise Unsupported(f"type {kind!r}")

    def lookup(self, target: str, fast: str, slow: str, indent: int, width: int = 1) -> None:
        """``target`` from a table (``fast``, ``width`` bytes), else from ``slow`` (value, p)."""
        self.line(indent, f"{target} = {fast}")
        self.line(indent, f"if {target} is None:")
        self.line(indent + 1, f"{target}, p = {slow}")
        self.line(indent, "else:")
        self.line(indent + 1, f"p += {width}")

    def long(self, indent: int) -> str:
        value = self.var()
        self.lookup(value, "_ONE[d[p]]", "_long(d, p)", indent)
        return value

    def string(self, indent: int) -> str:
        value = self.var()
        self.line(indent, "n = _SIZE[d[p]]")
        self.line(indent, "if n is None:")
        self.line(indent + 1, "n, p = _len(d, p)")
        self.line(indent, "p += n + 1")
        self.line(indent, f"{value} = d[p - n:p].decode()")
        return value

    def enum(self, schema: dict[str, Any], indent: int) -> str:
        symbols = tuple(str(s) for s in schema["symbols"])
        table = tuple(
            symbols[size] if size is not None and size < len(symbols) else None for size in _SIZE
        )
        value = self.var()
        fast = f"{self.constant(table)}[d[p]]"
        self.lookup(value, fast, f"_symbol(d, p, {self.constant(symbols)})", indent)
        return value

    def array(self, schema: dict[str, Any], indent: int, stack: tuple[str, ...]) -> str:
        value, count = self.var(), self.var()
        self.line(indent, f"{value} = []")
        self.line(indent, "while True:")
        self.lookup(count, "_SIZE[d[p]]", "_count(d, p)", indent + 1)
        self.line(indent + 1, f"if not {count}:")
        self.line(indent + 2, "break")
        self.line(indent + 1, f"for _ in range({count}):")
        item = self.node(schema["items"], indent + 2, stack)
        self.line(indent + 2, f"{value}.append({item})")
        return value

    def record(self, schema: dict[str, Any], indent: int, stack: tuple[str, ...]) -> str:
        name = str(schema.get("name"))
        if name in stack:
            raise Unsupported(f"recursive record {name}")
        if not schema["fields"]:
            raise Unsupported(f"record {name} has no fields")  # arrays rely on items' bytes
        items = []
        for field in schema["fields"]:
            value = self.node(field["type"], indent, (*stack, name))
            items.append(f"{str(field['name'])!r}: {value}")
        return "{" + ", ".join(items) + "}"

    def union(self, branches: list[Any], indent: int, stack: tuple[str, ...]) -> str:
        if len(branches) != 2 or branches[0] != "null":
            raise Unsupported("only [null, T] unions")
        self.line(indent, "b = d[p]")
        self.line(indent, "if b != 2 and b:")
        self.line(indent + 1, "b, p = _branch(d, p)")
        self.line(indent, "if b:")
        self.line(indent + 1, "p += 1")
        present = self.node(branches[1], indent + 1, stack)
        if not present.isidentifier():  # a record's dict display
            value = self.var()
            self.line(indent + 1, f"{value} = {present}")
            present = value
        self.line(indent, "else:")
        self.line(indent + 1, f"{present} = None")
        self.line(indent + 1, "p += 1")
        return present


def _full_name(schema: dict[str, Any]) -> str:
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"
