"""Avro single-object encoding of carebus records.

Wire form (Avro specification, "Single-object encoding")::

    C3 01 | 8-byte CRC-64-AVRO fingerprint of the writer schema (little-endian) | Avro body

:func:`encode` writes with the current schema of the named record;
:func:`decode` looks the fingerprint up among the current and every released
schema, reads the body with that writer schema (fastavro), and resolves it to the
current schema of the same name, so data written by an older release still reads.

Everything is prepared once, at import: schemas parsed by fastavro, and for each
current schema a generated writer (:mod:`schemas._writer`, byte-for-byte what
fastavro writes but several times faster on these records) and a generated reader
(:mod:`schemas._reader`, returning what fastavro returns, also several times
faster). Data written with an older released schema is read by fastavro, which
resolves it to the current schema.
"""

from __future__ import annotations

import re
from io import BytesIO
from typing import Any, NamedTuple

from fastavro import parse_schema, schemaless_reader, schemaless_writer

import schemas
from schemas._codegen import Unsupported
from schemas._reader import Read, compile_reader
from schemas._writer import Write, compile_writer
from schemas.errors import DecodeError, EncodeError, UnknownSchema

MAGIC = b"\xc3\x01"
HEADER_LENGTH = len(MAGIC) + 8
_FIELD = re.compile(r"on field (\w+)")


class _Writer(NamedTuple):
    header: bytes
    schema: Any  # fastavro parsed schema
    write: Write | None  # generated writer; None means use fastavro


class _Reader(NamedTuple):
    name: str
    writer: Any
    reader: Any | None  # None when the writer schema is the current one
    read: Read | None  # generated reader of the current schema; None means use fastavro


def parse(schema_json: dict[str, Any]) -> Any:
    """A fastavro parsed schema for a self-contained JSON schema."""
    return parse_schema(schema_json, named_schemas={})


def _compile(schema_json: dict[str, Any]) -> Write | None:
    try:
        return compile_writer(schema_json)
    except Unsupported:
        return None


def _compile_reader(schema_json: dict[str, Any]) -> Read | None:
    try:
        return compile_reader(schema_json)
    except Unsupported:
        return None


def _build() -> tuple[dict[str, _Writer], dict[bytes, _Reader]]:
    writers: dict[str, _Writer] = {}
    readers: dict[bytes, _Reader] = {}
    for name in schemas.RECORD_SCHEMAS:
        current = schemas.schema(name)
        fp = schemas.fingerprint(current)
        parsed = parse(current)
        writers[name] = _Writer(MAGIC + fp, parsed, _compile(current))
        readers[fp] = _Reader(name, parsed, None, _compile_reader(current))
    for version in schemas.released_versions():
        for name in schemas.RECORD_SCHEMAS:
            old = schemas.released_schema(version, name)
            if old is None:
                continue
            fp = schemas.fingerprint(old)
            if fp not in readers:
                readers[fp] = _Reader(name, parse(old), writers[name].schema, None)
    return writers, readers


_WRITERS, _READERS = _build()


def encode(schema_name: str, record: dict[str, Any]) -> bytes:
    """The single-object encoding of ``record`` with the current schema ``schema_name``.

    :class:`EncodeError` when the record does not fit; its message names the schema
    (and the field, when known) but never a value.
    """
    try:
        writer = _WRITERS[schema_name]
    except KeyError:
        raise UnknownSchema(f"no schema named {schema_name}") from None
    try:
        if writer.write is not None:
            parts = [writer.header]
            writer.write(record, parts.append)
            return b"".join(parts)
        buffer = BytesIO()
        buffer.write(writer.header)
        schemaless_writer(buffer, writer.schema, record)
        return buffer.getvalue()
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        # Library messages can quote values (patient data): keep at most a field name
        # (fastavro's "on field X", or the missing key), and do not chain.
        where = _FIELD.search(str(exc)) if not isinstance(exc, KeyError) else None
        field = where.group(1) if where else exc.args[0] if isinstance(exc, KeyError) else None
        detail = f" (field {field})" if isinstance(field, str) and field.isidentifier() else ""
        raise EncodeError(f"record does not match {schema_name}{detail}") from None


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """The schema name and record in single-object encoded ``data``.

    :class:`DecodeError` when the body cannot be read (it ends early, or holds a
    negative length, an invalid index or invalid UTF-8); its message names the
    schema and the kind of error, never a value. Bytes after the body are ignored,
    as fastavro ignores them.
    """
    if type(data) is not bytes:  # a bytearray or memoryview: read a copy
        try:
            data = bytes(data)
        except TypeError:
            raise DecodeError("not an Avro single-object encoded record") from None
    if data[:2] != MAGIC or len(data) < HEADER_LENGTH:
        raise DecodeError("not an Avro single-object encoded record")
    reader = _READERS.get(data[2:HEADER_LENGTH])
    if reader is None:
        raise UnknownSchema(f"no schema with fingerprint {data[2:HEADER_LENGTH].hex()}")
    name, writer, resolved, read = reader
    record: Any
    try:
        if read is not None:
            record, _ = read(data, HEADER_LENGTH)
            return name, record
        record = schemaless_reader(BytesIO(data[HEADER_LENGTH:]), writer, resolved)
    except (EOFError, ValueError, TypeError, IndexError, KeyError, OverflowError) as exc:
        raise DecodeError(f"cannot read {name} body: {type(exc).__name__}") from exc
    if not isinstance(record, dict):
        raise DecodeError(f"{name} body is not a record")
    return name, record


def schema_header(schema_name: str) -> bytes:
    """The 10-byte header (magic and fingerprint) of the current schema ``schema_name``."""
    try:
        return _WRITERS[schema_name].header
    except KeyError:
        raise UnknownSchema(f"no schema named {schema_name}") from None
