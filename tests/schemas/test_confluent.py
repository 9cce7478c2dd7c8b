"""Tests for schemas/confluent.py: the Confluent Schema Registry wire format."""

from __future__ import annotations

import struct

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

import schemas
from schemas.confluent import ConfluentCodec
from schemas.errors import DecodeError, UnknownSchema
from tests.schemas.samples import sample


@pytest.fixture
def client() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": "mock://carebus-tests"})


class TestConfluentCodec:
    @pytest.mark.parametrize("name", schemas.RECORD_SCHEMAS)
    def test_round_trips_every_schema(self, client: SchemaRegistryClient, name: str) -> None:
        """A record encoded in the Confluent format decodes to the same name and record."""
        record = sample(schemas.schema(name))
        data = ConfluentCodec(client).encode(name, record)
        assert ConfluentCodec(client).decode(data) == (name, record)

    def test_frames_with_magic_zero_and_the_registered_id(
        self, client: SchemaRegistryClient
    ) -> None:
        """Bytes are 0x00, the 4-byte big-endian schema id, then the Avro body."""
        name = "carebus.alerts.Alert"
        data = ConfluentCodec(client).encode(name, sample(schemas.schema(name)))
        (schema_id,) = struct.unpack(">I", data[1:5])
        assert data[0] == 0
        registered = client.get_latest_version(name)
        assert registered.schema_id == schema_id

    def test_registers_each_schema_once_under_its_record_name(
        self, client: SchemaRegistryClient
    ) -> None:
        """Repeated encodes reuse one id; the subject is the record's full name."""
        codec = ConfluentCodec(client)
        name = "carebus.events.Encounter"
        first = codec.encode(name, sample(schemas.schema(name)))
        second = codec.encode(name, sample(schemas.schema(name), fill=False))
        assert first[:5] == second[:5]
        assert client.get_subjects() == [name]

    def test_from_url_gives_a_working_codec(self) -> None:
        """from_url builds a client for the URL (mock:// is the in-memory registry)."""
        codec = ConfluentCodec.from_url("mock://carebus-from-url")
        name = "carebus.alerts.AlertStatusChange"
        record = sample(schemas.schema(name))
        assert codec.decode(codec.encode(name, record)) == (name, record)

    def test_unknown_id_is_refused(self, client: SchemaRegistryClient) -> None:
        """An id the registry does not know raises UnknownSchema."""
        with pytest.raises(UnknownSchema):
            ConfluentCodec(client).decode(b"\x00\x00\x00\x03\xe7\x00")

    def test_wrong_magic_is_refused(self, client: SchemaRegistryClient) -> None:
        """Bytes that do not start with 0x00 (or are too short) raise DecodeError."""
        with pytest.raises(DecodeError):
            ConfluentCodec(client).decode(b"\xc3\x01\x00\x00\x00\x01")
        with pytest.raises(DecodeError):
            ConfluentCodec(client).decode(b"\x00\x00")
