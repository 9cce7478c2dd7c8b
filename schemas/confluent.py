"""The Confluent Schema Registry wire format, as an alternative to single-object encoding.

Wire form::

    00 | 4-byte schema id (big-endian) | Avro body

Subjects follow Confluent's RecordNameStrategy: the subject is the record's full
name (``carebus.events.Encounter``), because one topic carries many record types.
The registry client comes from confluent-kafka (``mock://`` URLs give its
in-memory registry, for tests). Ids are registered once per schema and cached;
writer schemas fetched by id are parsed once and cached.
"""

from __future__ import annotations

import json
import struct
from io import BytesIO
from typing import Any, NamedTuple

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro import schemaless_reader, schemaless_writer

import schemas
from schemas._loader import full_name
from schemas.codec import parse
from schemas.errors import DecodeError, EncodeError, RegistryError, UnknownSchema

MAGIC = b"\x00"
HEADER_LENGTH = 5
_ID = struct.Struct(">I")


class _Reader(NamedTuple):
    name: str
    writer: Any
    reader: Any | None


class ConfluentCodec:
    """Encode and decode records in the Confluent wire format against a registry."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self._client = client
        self._writers: dict[str, tuple[bytes, Any]] = {}
        self._readers: dict[int, _Reader] = {}

    @classmethod
    def from_url(cls, url: str) -> ConfluentCodec:
        """A codec for the registry at ``url`` (``mock://name`` for the in-memory one)."""
        return cls(SchemaRegistryClient.new_client({"url": url}))

    def encode(self, schema_name: str, record: dict[str, Any]) -> bytes:
        """``record`` in the Confluent wire format, registering its schema on first use."""
        header, parsed = self._writer(schema_name)
        out = BytesIO()
        out.write(header)
        try:
            schemaless_writer(out, parsed, record)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
            raise EncodeError(f"record does not match {schema_name}") from None
        return out.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """The schema name and record in Confluent-framed ``data``."""
        if len(data) < HEADER_LENGTH or data[:1] != MAGIC:
            raise DecodeError("not a Confluent wire-format record")
        (schema_id,) = _ID.unpack_from(data, 1)
        reader = self._reader(schema_id)
        try:
            record = schemaless_reader(BytesIO(data[HEADER_LENGTH:]), reader.writer, reader.reader)
        except (EOFError, ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError) as exc:
            raise DecodeError(f"cannot read {reader.name} body: {type(exc).__name__}") from exc
        if not isinstance(record, dict):
            raise DecodeError(f"{reader.name} body is not a record")
        return reader.name, record

    def _writer(self, schema_name: str) -> tuple[bytes, Any]:
        cached = self._writers.get(schema_name)
        if cached is not None:
            return cached
        schema_json = schemas.schema(schema_name)
        try:
            schema_id = self._client.register_schema(
                schema_name, Schema(json.dumps(schema_json), "AVRO")
            )
        except SchemaRegistryError as exc:
            raise RegistryError(f"cannot register {schema_name}: {exc.error_message}") from exc
        except OSError as exc:
            raise RegistryError(f"cannot reach the schema registry: {exc}") from exc
        cached = (MAGIC + _ID.pack(schema_id), parse(schema_json))
        self._writers[schema_name] = cached
        return cached

    def _reader(self, schema_id: int) -> _Reader:
        cached = self._readers.get(schema_id)
        if cached is not None:
            return cached
        try:
            registered = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise UnknownSchema(f"no schema with registry id {schema_id}") from exc
            raise RegistryError(f"cannot fetch schema id {schema_id}: {exc.error_message}") from exc
        except OSError as exc:
            raise RegistryError(f"cannot reach the schema registry: {exc}") from exc
        if not registered.schema_str:
            raise DecodeError(f"schema id {schema_id} has no schema text")
        writer_json = json.loads(registered.schema_str)
        name = full_name(writer_json)
        current = schemas.schema(name)
        same = schemas.fingerprint(current) == schemas.fingerprint(writer_json)
        cached = _Reader(name, parse(writer_json), None if same else parse(current))
        self._readers[schema_id] = cached
        return cached
