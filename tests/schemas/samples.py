"""Sample records built from a schema, for codec and compatibility tests."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any


def sample(schema: Any, *, fill: bool = True, named: dict[str, Any] | None = None) -> Any:
    """A value that fits ``schema``: every union filled (``fill``) or null, arrays of one."""
    named = {} if named is None else named
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        return sample(branches[0], fill=fill, named=named) if fill and branches else None
    if isinstance(schema, str) and schema in named:
        return sample(named[schema], fill=fill, named=named)
    kind = schema.get("type") if isinstance(schema, dict) else schema
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    if logical == "timestamp-millis":
        return datetime(2026, 3, 29, 1, 30, 15, 123000, tzinfo=UTC)
    if logical == "date":
        return date(1945, 3, 12)
    if kind == "record":
        name = schema["name"]
        namespace = schema.get("namespace")
        named[f"{namespace}.{name}" if namespace else name] = schema
        return {f["name"]: sample(f["type"], fill=fill, named=named) for f in schema["fields"]}
    if kind == "enum":
        named[f"{schema.get('namespace')}.{schema['name']}"] = schema
        return schema["symbols"][-1]
    if kind == "array":
        return [sample(schema["items"], fill=fill, named=named)] if fill else []
    primitives: dict[Any, Any] = {
        "string": "Ünïcode ✓ 9434765919",
        "int": -300,
        "long": 2**40,
        "boolean": True,
        "double": 1.5,
    }
    return primitives[kind]
