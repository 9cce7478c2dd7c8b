"""Tests for schemas/codec.py: Avro single-object encoding and decoding."""

from __future__ import annotations

import copy
from io import BytesIO
from typing import Any

import pytest
from fastavro import schemaless_writer

import schemas
from schemas import codec
from schemas.errors import DecodeError, EncodeError, UnknownSchema
from tests.schemas.samples import sample


def _old_alert_status_schema() -> dict[str, Any]:
    """AlertStatusChange as an imagined older release without the optional ``note``."""
    old = copy.deepcopy(schemas.schema("carebus.alerts.AlertStatusChange"))
    old["fields"] = [f for f in old["fields"] if f["name"] != "note"]
    return old


class TestEncode:
    @pytest.mark.parametrize("name", schemas.RECORD_SCHEMAS)
    @pytest.mark.parametrize("fill", [True, False], ids=["filled", "nulls"])
    def test_round_trips_every_schema(self, name: str, fill: bool) -> None:
        """A record encoded with its schema decodes to the same schema name and record."""
        record = sample(schemas.schema(name), fill=fill)
        assert codec.decode(codec.encode(name, record)) == (name, record)

    def test_starts_with_magic_and_fingerprint(self) -> None:
        """The bytes start C3 01, then the 8-byte CRC-64-AVRO fingerprint of the schema."""
        name = "carebus.alerts.Alert"
        data = codec.encode(name, sample(schemas.schema(name)))
        assert data[:2] == b"\xc3\x01"
        assert data[2:10] == schemas.fingerprint(schemas.schema(name))
        assert codec.schema_header(name) == data[:10]

    def test_unknown_schema_is_refused(self) -> None:
        """Encoding with a schema name that does not exist raises UnknownSchema."""
        with pytest.raises(UnknownSchema):
            codec.encode("carebus.events.Nope", {})
        with pytest.raises(UnknownSchema):
            codec.schema_header("carebus.events.Nope")

    def test_a_wrongly_typed_value_is_refused_without_quoting_it(self) -> None:
        """A value of the wrong type raises EncodeError whose message holds no value."""
        name = "carebus.events.Encounter"
        record = sample(schemas.schema(name))
        record["patient"]["key"] = 9434765919
        with pytest.raises(EncodeError) as info:
            codec.encode(name, record)
        assert "9434765919" not in str(info.value)
        assert info.value.__cause__ is None

    def test_a_missing_required_field_is_refused_and_named(self) -> None:
        """A record without a required field raises EncodeError naming the field."""
        name = "carebus.alerts.Alert"
        record = sample(schemas.schema(name))
        del record["dedup_key"]
        with pytest.raises(EncodeError, match="dedup_key"):
            codec.encode(name, record)

    def test_a_naive_datetime_is_refused(self) -> None:
        """Timestamps must be timezone-aware; a naive one raises EncodeError."""
        name = "carebus.alerts.Alert"
        record = sample(schemas.schema(name))
        record["raised_at"] = record["raised_at"].replace(tzinfo=None)
        with pytest.raises(EncodeError):
            codec.encode(name, record)


class TestDecode:
    def test_not_single_object_is_refused(self) -> None:
        """Bytes without the C3 01 marker raise DecodeError."""
        with pytest.raises(DecodeError):
            codec.decode(b"\x00\x01" + bytes(20))
        with pytest.raises(DecodeError):
            codec.decode(b"\xc3\x01\x00")

    def test_unknown_fingerprint_is_refused(self) -> None:
        """A fingerprint of no known schema raises UnknownSchema naming it in hex."""
        with pytest.raises(UnknownSchema, match="0102030405060708"):
            codec.decode(b"\xc3\x01" + bytes(range(1, 9)) + b"\x00")

    def test_truncated_body_is_refused(self) -> None:
        """A body cut short raises DecodeError, not a library exception."""
        name = "carebus.events.Encounter"
        data = codec.encode(name, sample(schemas.schema(name)))
        with pytest.raises(DecodeError):
            codec.decode(data[: len(data) // 2])

    def test_reads_data_written_by_an_older_release(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Data written with a released schema is found by fingerprint and resolved to today's."""
        old = _old_alert_status_schema()
        monkeypatch.setattr(
            schemas, "_RELEASED", {"0.0.9": {"carebus.alerts.AlertStatusChange": old}}
        )
        _, readers = codec._build()
        monkeypatch.setattr(codec, "_READERS", readers)
        record = sample(old)
        body = BytesIO()
        schemaless_writer(body, codec.parse(old), record)
        data = b"\xc3\x01" + schemas.fingerprint(old) + body.getvalue()
        name, decoded = codec.decode(data)
        assert name == "carebus.alerts.AlertStatusChange"
        assert decoded == {**record, "note": None}
