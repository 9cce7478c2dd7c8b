"""Tests for schemas/_reader.py: the generated readers return what fastavro returns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from schemas import codec
from schemas._reader import Unsupported, compile_reader, decode_long
from schemas._writer import encode_long
from schemas.errors import DecodeError
from tests.schemas.samples import sample

#: What a generated reader raises on corrupt input (codec turns each into DecodeError).
CORRUPT = (ValueError, IndexError, EOFError, OverflowError)
_TS = {"type": "long", "logicalType": "timestamp-millis"}
_DATE = {"type": "int", "logicalType": "date"}
_ENUM = {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}
_STATUS = "carebus.alerts.AlertStatusChange"


def _record(*fields: tuple[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "T", "fields": [{"name": n, "type": t} for n, t in fields]}


def _write(schema: dict[str, Any], record: Any) -> bytes:
    out = BytesIO()
    schemaless_writer(out, parse_schema(schema, named_schemas={}), record)
    return out.getvalue()


def _fastavro(schema: dict[str, Any], body: bytes) -> Any:
    return schemaless_reader(BytesIO(body), parse_schema(schema, named_schemas={}), None)


def _generated(schema: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The record the generated reader reads from ``body``, which it must read to the end."""
    record, end = compile_reader(schema)(b"\xc3" + body, 1)
    assert end == len(body) + 1
    return record


def _assert_same(actual: Any, expected: Any, path: str = "record") -> None:
    """Equal values of the same types, dict keys in the same order, datetimes in UTC."""
    assert type(actual) is type(expected), path
    if isinstance(expected, dict):
        assert list(actual) == list(expected), path
        for key, value in expected.items():
            _assert_same(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for index, (item, value) in enumerate(zip(actual, expected, strict=True)):
            _assert_same(item, value, f"{path}[{index}]")
    else:
        assert actual == expected, path
        if isinstance(expected, datetime):
            assert actual.tzinfo == expected.tzinfo == UTC, path


def _values(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Hypothesis values that fit ``schema``."""
    if isinstance(schema, list):
        branches = [_values(branch, named) for branch in schema if branch != "null"]
        return st.one_of(st.none(), *branches) if "null" in schema else st.one_of(*branches)
    if isinstance(schema, str) and schema in named:
        return _values(named[schema], named)
    kind = schema.get("type") if isinstance(schema, dict) else schema
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    if logical == "timestamp-millis":
        return st.datetimes(timezones=st.just(UTC)).map(
            lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)
        )
    if logical == "date":
        return st.dates()
    if kind in ("record", "enum"):
        name, namespace = schema["name"], schema.get("namespace")
        named[f"{namespace}.{name}" if namespace else name] = schema
    if kind == "record":
        return st.fixed_dictionaries(
            {f["name"]: _values(f["type"], named) for f in schema["fields"]}
        )
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(_values(schema["items"], named), max_size=3)
    primitives: dict[str, st.SearchStrategy[Any]] = {
        "string": st.text(max_size=80),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "boolean": st.booleans(),
    }
    return primitives[kind]


class TestMatchesFastavro:
    @pytest.mark.parametrize("name", schemas.RECORD_SCHEMAS)
    @pytest.mark.parametrize("fill", [True, False], ids=["filled", "nulls"])
    def test_every_schema_with_samples(self, name: str, fill: bool) -> None:
        """For each record schema a sample record reads exactly as fastavro reads it."""
        schema = schemas.schema(name)
        body = _write(schema, sample(schema, fill=fill))
        _assert_same(_generated(schema, body), _fastavro(schema, body))

    @pytest.mark.parametrize("name", schemas.RECORD_SCHEMAS)
    @settings(max_examples=25, deadline=None)
    @given(data=st.data())
    def test_every_schema_with_arbitrary_records(self, name: str, data: st.DataObject) -> None:
        """For each record schema, random records read exactly as fastavro reads them."""
        schema = schemas.schema(name)
        body = _write(schema, data.draw(_values(schema, {})))
        _assert_same(_generated(schema, body), _fastavro(schema, body))

    @settings(max_examples=300, deadline=None)
    @given(millis=st.integers(-62_135_596_800_000, 253_402_300_799_999))
    def test_timestamps_across_the_whole_range(self, millis: int) -> None:
        """Any timestamp from year 1 to 9999, before 1970 too, equals fastavro's datetime."""
        schema = _record(("t", _TS), ("u", ["null", _TS]))
        body = encode_long(millis) + b"\x02" + encode_long(millis)
        _assert_same(_generated(schema, body), _fastavro(schema, body))
        _assert_same(_generated(schema, body), _fastavro(schema, body))  # now from the cache

    @pytest.mark.parametrize("days", [-719_162, -1, 0, 1, 20_000, 2_932_896])
    def test_dates_across_the_whole_range(self, days: int) -> None:
        """Dates from year 1 to 9999, before 1970 too, equal fastavro's."""
        schema = _record(("d", _DATE))
        body = encode_long(days)
        _assert_same(_generated(schema, body), _fastavro(schema, body))

    @pytest.mark.parametrize("size", [0, 1, 63, 64, 200, 10_000])
    def test_long_strings_and_arrays(self, size: int) -> None:
        """Lengths and counts that take more than one byte read as fastavro reads them."""
        schema = _record(
            ("s", "string"),
            ("n", ["null", "string"]),
            ("a", {"type": "array", "items": ["null", "int"]}),
        )
        body = _write(schema, {"s": "é" * size, "n": "x" * size, "a": [None, 7] * size})
        _assert_same(_generated(schema, body), _fastavro(schema, body))

    def test_enum_indexes_beyond_one_byte(self) -> None:
        """An enum with more than 64 symbols reads its later symbols as fastavro does."""
        schema = _record(
            ("e", {"type": "enum", "name": "E", "symbols": [f"S{i}" for i in range(100)]})
        )
        for symbol in ("S0", "S63", "S64", "S99"):
            body = _write(schema, {"e": symbol})
            _assert_same(_generated(schema, body), _fastavro(schema, body))

    def test_negative_block_counts(self) -> None:
        """An array block with a negative count (then its size in bytes) reads as fastavro does."""
        schema = _record(("a", {"type": "array", "items": "string"}))
        body = encode_long(-2) + encode_long(4) + b"\x02a\x02b" + b"\x02\x02c" + b"\x00"
        assert _generated(schema, body) == _fastavro(schema, body) == {"a": ["a", "b", "c"]}

    def test_varints_with_redundant_bytes(self) -> None:
        """A valid varint written longer than needed (0x82 0x00 for 1) reads as fastavro does."""
        schema = _record(("n", ["null", "string"]), ("e", _ENUM), ("l", "long"), ("s", "string"))
        body = b"\x82\x00\x02a" + b"\x82\x00" + b"\x80\x80\x00" + b"\x82\x00z"
        assert _generated(schema, body) == _fastavro(schema, body)
        assert _generated(schema, body) == {"n": "a", "e": "B", "l": 0, "s": "z"}

    def test_extreme_longs(self) -> None:
        """The smallest and largest longs read as fastavro reads them."""
        schema = _record(("a", "long"), ("b", "long"), ("c", ["null", "int"]))
        body = _write(schema, {"a": -(2**63), "b": 2**63 - 1, "c": -(2**31)})
        _assert_same(_generated(schema, body), _fastavro(schema, body))

    def test_timestamp_cache_does_not_confuse_neighbours(self) -> None:
        """Timestamps a millisecond apart, read twice (the second time cached), stay distinct."""
        schema = _record(("a", _TS), ("b", _TS))
        moment = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
        record = {"a": moment, "b": moment + timedelta(milliseconds=1)}
        body = _write(schema, record)
        assert _generated(schema, body) == _generated(schema, body) == record

    def test_bytes_after_the_body_are_not_read(self) -> None:
        """The reader stops at the end of the record and returns where it stopped."""
        schema = _record(("s", "string"))
        record, end = compile_reader(schema)(b"\x06abc" + b"rest", 0)
        assert (record, end) == ({"s": "abc"}, 4)


class TestCorruptInput:
    @pytest.mark.parametrize(
        ("kind", "body"),
        [
            ("string", encode_long(-1) + b"a"),
            ("string", encode_long(2**62) + b"abc"),
            ("string", encode_long(5) + b"abc"),
            ("string", b"\x04\xc3\x28"),
            ("string", b"\x80"),
            ("string", b""),
            (["null", "string"], encode_long(2) + b"\x02a"),
            (["null", "string"], encode_long(-1) + b"\x02a"),
            (["null", "string"], b"\x02" + encode_long(-3) + b"abc"),
            (_ENUM, encode_long(3)),
            (_ENUM, encode_long(-1)),
            ("boolean", b"\x02"),
            ("long", b"\xff" * 10 + b"\x01"),
            ("long", b"\xff" * 9 + b"\x7f"),
            (_TS, encode_long(2**62)),
            (_DATE, encode_long(2**40)),
            (_DATE, encode_long(-(2**30))),
            ({"type": "array", "items": "string"}, encode_long(2**40) + b"\x02a"),
            (
                {"type": "array", "items": "string"},
                encode_long(-1) + encode_long(-2) + b"\x02a\x00",
            ),
            ({"type": "array", "items": "string"}, encode_long(3) + b"\x02a"),
        ],
    )
    def test_is_refused(self, kind: Any, body: bytes) -> None:
        """Negative, absurd or overlong lengths, bad indexes and short bodies raise."""
        with pytest.raises(CORRUPT):
            compile_reader(_record(("f", kind)))(body, 0)

    def test_a_body_cut_anywhere_is_refused(self) -> None:
        """A record body cut at any byte raises, as fastavro does."""
        schema = schemas.schema("carebus.events.Encounter")
        body = _write(schema, sample(schema))
        read = compile_reader(schema)
        for cut in range(len(body)):
            with pytest.raises(CORRUPT):
                read(body[:cut], 0)


def _status_body(
    key: bytes = b"\x02k", action: bytes = b"\x02", at: bytes | None = None, note: bytes = b"\x00"
) -> bytes:
    """The header and a hand-written body of an AlertStatusChange (by: "9434765919")."""
    moment = encode_long(1_711_929_600_123) if at is None else at
    return codec.schema_header(_STATUS) + key + action + b"\x149434765919" + moment + note


class TestCodecDecode:
    def test_uses_the_generated_reader_for_current_schemas_only(self) -> None:
        """Every current schema has a generated reader; older releases are read by fastavro."""
        current = {schemas.fingerprint(schemas.schema(n)) for n in schemas.RECORD_SCHEMAS}
        for fp, reader in codec._READERS.items():
            assert (reader.read is not None) == (fp in current) == (reader.reader is None)

    def test_reads_the_hand_written_body(self) -> None:
        """A body written by hand reads as the record it encodes."""
        assert codec.decode(_status_body(note=b"\x02\x06abc")) == (
            _STATUS,
            {
                "dedup_key": "k",
                "action": "RESOLVED",
                "by": "9434765919",
                "at": datetime(2024, 4, 1, 0, 0, 0, 123000, tzinfo=UTC),
                "note": "abc",
            },
        )

    @pytest.mark.parametrize(
        "parts",
        [
            {"key": encode_long(-1) + b"k"},
            {"key": encode_long(2**62) + b"k"},
            {"key": b"\x02\xff"},
            {"action": encode_long(2)},
            {"action": encode_long(-1)},
            {"note": encode_long(2) + b"\x02a"},
            {"note": encode_long(-1) + b"\x02a"},
            {"note": b"\x02\x10a"},
            {"at": encode_long(2**62)},
            {"at": b"\xff" * 11},
        ],
    )
    def test_corrupt_bodies_raise_decode_error(self, parts: dict[str, bytes]) -> None:
        """Corrupt bodies raise DecodeError naming the schema and the error, never a value."""
        with pytest.raises(DecodeError) as info:
            codec.decode(_status_body(**parts))
        cause = info.value.__cause__
        assert isinstance(cause, CORRUPT)
        assert str(info.value) == f"cannot read {_STATUS} body: {type(cause).__name__}"
        assert "9434765919" not in str(info.value)

    def test_a_truncated_body_raises_decode_error(self) -> None:
        """A body cut at any byte raises DecodeError."""
        data = _status_body(note=b"\x02\x06abc")
        for cut in range(codec.HEADER_LENGTH, len(data)):
            with pytest.raises(DecodeError):
                codec.decode(data[:cut])

    def test_bytes_after_the_body_are_ignored(self) -> None:
        """Trailing bytes are ignored, as fastavro (the reader before, and for old data) does."""
        data = _status_body()
        assert codec.decode(data + b"\x02garbage") == codec.decode(data)
        fp = schemas.fingerprint(schemas.schema(_STATUS))
        body = data[codec.HEADER_LENGTH :]
        with_fastavro = schemaless_reader(BytesIO(body + b"\x02garbage"), codec._READERS[fp].writer)
        assert with_fastavro == codec.decode(data)[1]

    @pytest.mark.parametrize("wrap", [bytearray, memoryview])
    def test_accepts_other_byte_buffers(self, wrap: Any) -> None:
        """A bytearray or memoryview decodes as the same bytes do."""
        data = _status_body()
        assert codec.decode(wrap(data)) == codec.decode(data)

    def test_old_release_data_still_resolves(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Data written with an older release's schema is read by fastavro and resolved."""
        old = schemas.schema(_STATUS) | {
            "fields": [f for f in schemas.schema(_STATUS)["fields"] if f["name"] != "note"]
        }
        monkeypatch.setattr(schemas, "_RELEASED", {"0.0.9": {_STATUS: old}})
        _, readers = codec._build()
        monkeypatch.setattr(codec, "_READERS", readers)
        assert readers[schemas.fingerprint(old)].read is None
        record = sample(old)
        data = b"\xc3\x01" + schemas.fingerprint(old) + _write(old, record)
        assert codec.decode(data) == (_STATUS, {**record, "note": None})
        with pytest.raises(DecodeError):
            codec.decode(data[:-1])


class TestRefuses:
    @pytest.mark.parametrize(
        "kind",
        [
            ["int", "string"],
            ["string", "null"],
            ["null", "int", "string"],
            {"type": "map", "values": "string"},
            "double",
            "bytes",
            {"type": "fixed", "name": "F", "size": 2},
            {"type": "string", "logicalType": "uuid"},
            {"type": "record", "name": "Empty", "fields": []},
        ],
    )
    def test_unsupported_shapes(self, kind: Any) -> None:
        """Shapes outside carebus's schemas raise Unsupported (callers fall back to fastavro)."""
        with pytest.raises(Unsupported):
            compile_reader(_record(("f", kind)))

    def test_a_recursive_record(self) -> None:
        """A record that contains itself is not supported."""
        schema = {
            "type": "record",
            "name": "N",
            "fields": [{"name": "next", "type": ["null", "N"]}],
        }
        with pytest.raises(Unsupported):
            compile_reader(schema)

    def test_a_top_level_that_is_not_a_record(self) -> None:
        """Only records can be compiled."""
        with pytest.raises(Unsupported):
            compile_reader({"type": "array", "items": "string"})

    def test_field_names_are_not_code(self) -> None:
        """A field name that looks like code is only ever a dict key."""
        name = "x'] + __import__('os').getcwd() + ['"
        schema = {"type": "record", "name": "T", "fields": [{"name": name, "type": "int"}]}
        assert compile_reader(schema)(b"\x04", 0) == ({name: 2}, 1)


class TestDecodeLong:
    @pytest.mark.parametrize("n", [0, -1, 1, -64, 64, 2**40, -(2**63), 2**63 - 1])
    def test_reads_what_encode_long_writes(self, n: int) -> None:
        """Zig-zag varints read back to the number written, and the position after them."""
        data = b"\x00" + encode_long(n) + b"\x00"
        assert decode_long(data, 1) == (n, len(data) - 1)

    def test_refuses_varints_beyond_a_long(self) -> None:
        """Ten bytes whose value exceeds 64 bits raise ValueError."""
        with pytest.raises(ValueError, match="range"):
            decode_long(b"\xff" * 9 + b"\x7f", 0)
