"""Tests for schemas/_writer.py: the generated writers match fastavro byte for byte."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from schemas._writer import Unsupported, compile_writer, encode_long
from tests.schemas.samples import sample


def _fastavro(schema: dict[str, Any], record: Any) -> bytes:
    out = BytesIO()
    schemaless_writer(out, parse_schema(schema, named_schemas={}), record)
    return out.getvalue()


def _generated(schema: dict[str, Any], record: Any) -> bytes:
    parts: list[bytes] = []
    compile_writer(schema)(record, parts.append)
    return b"".join(parts)


def _record(*fields: tuple[str, Any]) -> dict[str, Any]:
    return {
        "type": "record",
        "name": "T",
        "fields": [{"name": n, "type": t} for n, t in fields],
    }


_TS = {"type": "long", "logicalType": "timestamp-millis"}
_DATE = {"type": "int", "logicalType": "date"}


class TestMatchesFastavro:
    @pytest.mark.parametrize("name", schemas.RECORD_SCHEMAS)
    @pytest.mark.parametrize("fill", [True, False], ids=["filled", "nulls"])
    def test_every_schema(self, name: str, fill: bool) -> None:
        """For each record schema the generated writer writes exactly fastavro's bytes."""
        schema = schemas.schema(name)
        record = sample(schema, fill=fill)
        assert _generated(schema, record) == _fastavro(schema, record)

    @settings(max_examples=200, deadline=None)
    @given(
        text=st.text(),
        number=st.integers(min_value=-(2**63), max_value=2**63 - 1),
        small=st.integers(min_value=-(2**31), max_value=2**31 - 1),
        flag=st.booleans(),
        moment=st.datetimes(
            min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
        ),
        day=st.dates(),
        items=st.lists(st.one_of(st.none(), st.text(max_size=3)), max_size=1100),
    )
    def test_arbitrary_values(
        self,
        text: str,
        number: int,
        small: int,
        flag: bool,
        moment: datetime,
        day: date,
        items: list[str | None],
    ) -> None:
        """Random strings, numbers, times, dates and long arrays encode as fastavro does."""
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        schema = _record(
            ("s", "string"),
            ("l", "long"),
            ("i", ["null", "int"]),
            ("b", "boolean"),
            ("t", _TS),
            ("d", _DATE),
            ("a", {"type": "array", "items": ["null", "string"]}),
        )
        record = {"s": text, "l": number, "i": small, "b": flag, "t": moment, "d": day, "a": items}
        assert _generated(schema, record) == _fastavro(schema, record)

    def test_missing_field_with_default_uses_the_default(self) -> None:
        """A field left out of the dict is written as its default, as fastavro does."""
        schema = {
            "type": "record",
            "name": "T",
            "fields": [
                {"name": "n", "type": ["null", "string"], "default": None},
                {"name": "a", "type": {"type": "array", "items": "string"}, "default": []},
            ],
        }
        assert _generated(schema, {}) == _fastavro(schema, {}) == b"\x00\x00"


class TestRefuses:
    @pytest.mark.parametrize(
        ("kind", "value"),
        [
            ("string", 5),
            ("int", True),
            ("int", 2**31),
            ("long", "1"),
            ("boolean", 1),
            (_TS, datetime(2026, 1, 1)),
            (_DATE, datetime(2026, 1, 1, tzinfo=UTC)),
            ({"type": "array", "items": "string"}, "abc"),
            ({"type": "enum", "name": "E", "symbols": ["A"]}, "B"),
        ],
    )
    def test_values_of_the_wrong_type(self, kind: Any, value: Any) -> None:
        """A value that does not fit its type raises instead of writing something else."""
        with pytest.raises((TypeError, AttributeError, KeyError)):
            _generated(_record(("f", kind)), {"f": value})

    def test_a_missing_required_field(self) -> None:
        """A required field absent from the dict raises KeyError naming it."""
        with pytest.raises(KeyError, match="f"):
            _generated(_record(("f", "string")), {})

    @pytest.mark.parametrize(
        "kind",
        [
            ["int", "string"],
            ["null", "int", "string"],
            {"type": "map", "values": "string"},
            "double",
            {"type": "fixed", "name": "F", "size": 2},
        ],
    )
    def test_unsupported_shapes(self, kind: Any) -> None:
        """Shapes outside carebus's schemas raise Unsupported (callers fall back to fastavro)."""
        with pytest.raises(Unsupported):
            compile_writer(_record(("f", kind)))

    def test_a_recursive_record(self) -> None:
        """A record that contains itself is not supported."""
        schema = {
            "type": "record",
            "name": "N",
            "fields": [{"name": "next", "type": ["null", "N"]}],
        }
        with pytest.raises(Unsupported):
            compile_writer(schema)


class TestEncodeLong:
    @pytest.mark.parametrize(
        ("n", "expected"),
        [
            (0, "00"),
            (-1, "01"),
            (1, "02"),
            (-64, "7f"),
            (64, "8001"),
            (2**63 - 1, "feffffffffffffffff01"),
        ],
    )
    def test_zigzag_varint(self, n: int, expected: str) -> None:
        """Longs are zig-zag varints, as the Avro specification's examples show."""
        assert encode_long(n).hex() == expected

    def test_timestamps_before_1970(self) -> None:
        """A timestamp before the epoch encodes as a negative count of milliseconds."""
        moment = datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
        schema = _record(("t", _TS))
        assert _generated(schema, {"t": moment}) == _fastavro(schema, {"t": moment})
        assert _generated(schema, {"t": moment - timedelta(days=1)}) == encode_long(-86_400_001)
