"""The JSON form of a carebus record, for people and line-oriented tools.

One JSON object per record::

    {"schema": "carebus.events.Encounter", "record": {...}}

``record`` is the Avro record as plain JSON: field names as in the schema, unions
written as their value (no Avro JSON-encoding type tags), ``timestamp-millis`` as
ISO 8601 in UTC with offset (``2026-02-09T09:00:00+00:00``, milliseconds shown
only when not zero), ``date`` as ``YYYY-MM-DD``, enums as their symbol.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any


def jsonable(value: Any) -> Any:
    """``value`` (a record, or any part of one) with dates and times as ISO 8601 text."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


def dumps(schema_name: str, record: dict[str, Any]) -> str:
    """One line of JSON: ``{"schema": ..., "record": ...}``."""
    return json.dumps({"schema": schema_name, "record": jsonable(record)})
