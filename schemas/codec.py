"""Avro single-object encoding of carebus records.

Wire form (Avro specification, "Single-object encoding")::

    C3 01 | 8-byte CRC-64-AVRO fingerprint of the writer schema (little-endian) | Avro body

:func:`encode` writes with the current schema of the named record;
:func:`decode` looks the fingerprint up among the current and every released
schema, reads the body with that writer schema, and resolves it to the current
schema of the same name, so data written by an older release still reads.
Every schema is parsed once, at import.
"""

from __future__ import annotations

import re
from io import BytesIO
from typing import Any, NamedTuple

from fastavro import parse_schema, schemaless_reader, schemaless_writer

import schemas
from schemas.errors import DecodeError, EncodeError, UnknownSchema

MAGIC = b"\xc3\x01"
HEADER_LENGTH = len(MAGIC) + 8
_FIELD = re.compile(r"on field (\w+)")


#: field name -> (record name when the field is a union holding that record, else None;
#: whether the field is an array of records; plan for the record(s) inside).
_Plan = dict[str, tuple[str | None, bool, "_Plan"]]


class _Writer(NamedTuple):
    header: bytes
    schema: Any
    plan: _Plan


class _Reader(NamedTuple):
    name: str
    writer: Any
    reader: Any | None  # None when the writer schema is the current one


def parse(schema_json: dict[str, Any]) -> Any:
    """A fastavro parsed schema for a self-contained JSON schema."""
    return parse_schema(schema_json, named_schemas={})


def _build() -> tuple[dict[str, _Writer], dict[bytes, _Reader]]:
    writers: dict[str, _Writer] = {}
    readers: dict[bytes, _Reader] = {}
    for name in schemas.RECORD_SCHEMAS:
        current = schemas.schema(name)
        fp = schemas.fingerprint(current)
        parsed = parse(current)
        writers[name] = _Writer(MAGIC + fp, parsed, _plan(current, {}))
        readers[fp] = _Reader(name, parsed, None)
    for version in schemas.released_versions():
        for name in schemas.RECORD_SCHEMAS:
            old = schemas.released_schema(version, name)
            if old is None:
                continue
            fp = schemas.fingerprint(old)
            if fp not in readers:
                readers[fp] = _Reader(name, parse(old), writers[name].schema)
    return writers, readers


def _plan(record: dict[str, Any], named: dict[str, dict[str, Any]]) -> _Plan:
    """Where ``record`` holds records inside unions, at any depth.

    fastavro picks a union branch for a dict by validating the whole dict against
    each record branch, which costs as much as writing it. Encoding tags those
    values with their branch name (fastavro's tuple notation) instead, guided by
    this plan; records given to :func:`encode` stay plain dicts.
    """
    named[_full_name(record)] = record
    plan: _Plan = {}
    for field in record["fields"]:
        kind = field["type"]
        is_array = isinstance(kind, dict) and kind.get("type") == "array"
        if is_array:
            kind = kind["items"]
        branch: str | None = None
        if isinstance(kind, list):
            records = [_resolve(b, named) for b in kind if _resolve(b, named) is not None]
            if len(records) != 1:
                continue
            target = records[0]
            branch = _full_name(target)
        else:
            target = _resolve(kind, named)
            if target is None:
                continue
        sub = _plan(target, named)
        if branch is not None or sub:
            plan[field["name"]] = (branch, is_array, sub)
    return plan


def _resolve(kind: Any, named: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    if isinstance(kind, str):
        return named.get(kind)
    if isinstance(kind, dict) and kind.get("type") == "record":
        named[_full_name(kind)] = kind
        return kind
    return None


def _full_name(record: dict[str, Any]) -> str:
    name = str(record["name"])
    namespace = record.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _tag(record: dict[str, Any], plan: _Plan) -> dict[str, Any]:
    out = dict(record)
    for name, (branch, is_array, sub) in plan.items():
        item = record.get(name)
        if item is None or not isinstance(item, (dict, list)):
            continue
        if is_array:
            item = [_tag(x, sub) if sub and isinstance(x, dict) else x for x in item]
        elif sub:
            item = _tag(item, sub)
        out[name] = (branch, item) if branch is not None else item
    return out


_WRITERS, _READERS = _build()


def encode(schema_name: str, record: dict[str, Any]) -> bytes:
    """The single-object encoding of ``record`` with the current schema ``schema_name``."""
    try:
        writer = _WRITERS[schema_name]
    except KeyError:
        raise UnknownSchema(f"no schema named {schema_name}") from None
    out = BytesIO()
    out.write(writer.header)
    try:
        tagged = _tag(record, writer.plan) if writer.plan else record
        schemaless_writer(out, writer.schema, tagged)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        # fastavro's messages can quote field values (patient data): keep only the
        # field name, and do not chain the original exception.
        where = _FIELD.search(str(exc))
        field = f" (field {where.group(1)})" if where else ""
        raise EncodeError(f"record does not match {schema_name}{field}") from None
    return out.getvalue()


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """The schema name and record in single-object encoded ``data``."""
    if len(data) < HEADER_LENGTH or data[:2] != MAGIC:
        raise DecodeError("not an Avro single-object encoded record")
    fp = bytes(data[2:HEADER_LENGTH])
    try:
        reader = _READERS[fp]
    except KeyError:
        raise UnknownSchema(f"no schema with fingerprint {fp.hex()}") from None
    try:
        record = schemaless_reader(BytesIO(data[HEADER_LENGTH:]), reader.writer, reader.reader)
    except (EOFError, ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError) as exc:
        raise DecodeError(f"cannot read {reader.name} body: {type(exc).__name__}") from exc
    if not isinstance(record, dict):
        raise DecodeError(f"{reader.name} body is not a record")
    return reader.name, record


def schema_header(schema_name: str) -> bytes:
    """The 10-byte header (magic and fingerprint) of the current schema ``schema_name``."""
    try:
        return _WRITERS[schema_name].header
    except KeyError:
        raise UnknownSchema(f"no schema named {schema_name}") from None
