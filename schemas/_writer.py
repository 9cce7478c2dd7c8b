"""A fast Avro binary writer, generated once per schema.

fastavro's generic writer dispatches on the schema for every value and, for each
union, validates the value against the branches; for carebus's records, with
dozens of nullable fields, that is most of the cost of publishing an event.
:func:`compile_writer` instead generates one straight-line Python function per
schema (as ``dataclasses`` and ``namedtuple`` do) for the shapes carebus's
schemas use: records, ``["null", T]`` unions, strings, ints, longs, booleans,
enums, arrays, ``timestamp-millis`` and ``date``. Any other shape raises
:class:`Unsupported`, and the caller falls back to fastavro. The output is
byte-for-byte what fastavro writes; the tests check it for every schema.

The generated code refers only to constants it is given (never to text from the
schema: field names are passed through ``repr``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from schemas._codegen import Emitter, Unsupported, define, require_record

#: Writes the Avro binary encoding of a record as a series of ``bytes`` pieces, each
#: passed to the callable it is given (``list.append``, then ``b"".join``, is fastest;
#: ``bytearray.extend`` works too).
Write = Callable[[Any, Callable[[bytes], object]], None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def encode_long(n: int) -> bytes:
    """Avro ``long``/``int`` encoding: zig-zag, then base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = tuple(encode_long(n) for n in range(1024))


def _long(value: Any) -> bytes:
    if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
        raise TypeError("expected a long")
    return _SMALL[value] if 0 <= value < 1024 else encode_long(value)


def _int(value: Any) -> bytes:
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        raise TypeError("expected an int")
    return _SMALL[value] if 0 <= value < 1024 else encode_long(value)


#: Encoded timestamps by datetime: the same times recur within a message (event,
#: message and received time) and across a run (one received time per batch).
_TIMESTAMPS: dict[datetime, bytes] = {}
_TIMESTAMPS_MAX = 4096


def _timestamp_millis(value: Any) -> bytes:
    if not isinstance(value, datetime):
        return _long(value)
    encoded = _TIMESTAMPS.get(value)
    if encoded is None:
        delta = value - _EPOCH  # TypeError for a naive datetime
        millis = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
        encoded = _long(millis)
        if len(_TIMESTAMPS) >= _TIMESTAMPS_MAX:
            _TIMESTAMPS.clear()
        _TIMESTAMPS[value] = encoded
    return encoded


def _date(value: Any) -> bytes:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError("expected a date")
    return encode_long(value.toordinal() - _EPOCH_ORDINAL)


def _length(size: int) -> bytes:
    return _SMALL[size] if size < 1024 else encode_long(size)


#: The non-null branch of a ``["null", T]`` union followed by a length: written in
#: one piece for a nullable string.
_PRESENT = tuple(b"\x02" + length for length in _SMALL)


def _present_length(size: int) -> bytes:
    return _PRESENT[size] if size < 1024 else b"\x02" + encode_long(size)


def _sequence(value: Any) -> Any:
    if type(value) is not list and type(value) is not tuple:
        raise TypeError("expected a list")
    return value


_HELPERS: dict[str, Any] = {
    "_long": _long,
    "_int": _int,
    "_ts": _timestamp_millis,
    "_date": _date,
    "_len": _length,
    "_seq": _sequence,
    "_S": _SMALL,
    "_P": _PRESENT,
    "_plen": _present_length,
}


def compile_writer(schema: Any) -> Write:
    """A writer for a self-contained JSON record schema; :class:`Unsupported` otherwise."""
    require_record(schema)
    gen = _Generator()
    gen.node("value", schema, 1, ())
    lines = ["def write(value, w):", *gen.lines, ""]
    writer: Write = define(lines, "write", _HELPERS, gen, f"avro writer {schema.get('name')}")
    return writer


class _Generator(Emitter):
    def node(self, var: str, schema: Any, indent: int, stack: tuple[str, ...]) -> None:
        if isinstance(schema, list):
            self.union(var, schema, indent, stack)
            return
        if isinstance(schema, str) and schema in self.named:
            schema = self.named[schema]
        kind = schema.get("type") if isinstance(schema, dict) else schema
        if kind in ("record", "enum"):
            self.named[_full_name(schema)] = schema
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if logical == "timestamp-millis" and kind == "long":
            self.line(indent, f"w(_ts({var}))")
        elif logical == "date" and kind == "int":
            self.line(indent, f"w(_date({var}))")
        elif logical is not None:
            raise Unsupported(f"logical type {logical}")
        elif kind == "string":
            self.string(var, indent, present=False)
        elif kind == "long":
            self.line(indent, f"w(_long({var}))")
        elif kind == "int":
            self.line(indent, f"w(_int({var}))")
        elif kind == "boolean":
            self.line(indent, f"if {var} is True:")
            self.line(indent + 1, "w(b'\\x01')")
            self.line(indent, f"elif {var} is False:")
            self.line(indent + 1, "w(b'\\x00')")
            self.line(indent, "else:")
            self.line(indent + 1, "raise TypeError('expected a boolean')")
        elif kind == "enum":
            table = {symbol: encode_long(i) for i, symbol in enumerate(schema["symbols"])}
            self.line(indent, f"w({self.constant(table)}[{var}])")
        elif kind == "array":
            items = self.var()
            item = self.var()
            self.line(indent, f"{items} = _seq({var})")
            self.line(indent, f"if {items}:")
            self.line(indent + 1, f"w(_len(len({items})))")
            self.line(indent + 1, f"for {item} in {items}:")
            self.node(item, schema["items"], indent + 2, stack)
            self.line(indent, "w(b'\\x00')")
        elif kind == "record":
            self.record(var, schema, indent, stack)
        else:
            raise Unsupported(f"type {kind!r}")

    def record(self, var: str, schema: dict[str, Any], indent: int, stack: tuple[str, ...]) -> None:
        name = str(schema.get("name"))
        if name in stack:
            raise Unsupported(f"recursive record {name}")
        for field in schema["fields"]:
            field_var = self.var()
            key = repr(str(field["name"]))
            if "default" in field:
                default = field["default"]
                if default is None:
                    self.line(indent, f"{field_var} = {var}.get({key})")
                else:
                    self.line(indent, f"{field_var} = {var}.get({key}, {self.constant(default)})")
            else:
                self.line(indent, f"{field_var} = {var}[{key}]")
            self.node(field_var, field["type"], indent, (*stack, name))

    def string(self, var: str, indent: int, *, present: bool) -> None:
        """A string; ``present``: preceded by the non-null branch index of its union."""
        data, size = self.var(), self.var()
        table, function = ("_P", "_plen") if present else ("_S", "_len")
        self.line(indent, f"{data} = {var}.encode()")
        self.line(indent, f"{size} = len({data})")
        self.line(indent, f"w({table}[{size}] if {size} < 1024 else {function}({size}))")
        self.line(indent, f"w({data})")

    def union(self, var: str, branches: list[Any], indent: int, stack: tuple[str, ...]) -> None:
        if len(branches) != 2 or branches[0] != "null":
            raise Unsupported("only [null, T] unions")
        self.line(indent, f"if {var} is None:")
        self.line(indent + 1, "w(b'\\x00')")
        self.line(indent, "else:")
        if branches[1] == "string":
            self.string(var, indent + 1, present=True)
            return
        self.line(indent + 1, "w(b'\\x02')")
        self.node(var, branches[1], indent + 1, stack)


def _full_name(schema: dict[str, Any]) -> str:
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"
