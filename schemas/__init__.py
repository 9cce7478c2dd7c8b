"""carebus's Avro schemas: the events, the alerts, and how to read them.

One ``.avsc`` per named type, ``<namespace>.<Name>.avsc``, in this directory;
``released/<version>/`` keeps the schemas as they were at each release, so data
written then can still be read (see :mod:`schemas.codec`).

The top-level record schemas, those that are encoded on their own, are listed
explicitly in :data:`EVENT_SCHEMAS`, :data:`ALERT_SCHEMAS` and
:data:`FEED_SCHEMAS`; every other file
defines a type they share (``carebus.events.Header``, ``Patient``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from schemas._loader import expand, read_definitions
from schemas.errors import UnknownSchema

SCHEMA_DIR = Path(__file__).resolve().parent
RELEASED_DIR = SCHEMA_DIR / "released"

#: Event schemas, in the order of docs/architecture.md's Events table.
EVENT_SCHEMAS: tuple[str, ...] = (
    "carebus.events.PatientDemographics",
    "carebus.events.Encounter",
    "carebus.events.PatientMerged",
    "carebus.events.Referral",
    "carebus.events.Appointment",
    "carebus.events.Order",
    "carebus.events.Result",
    "carebus.events.Document",
    "carebus.events.Problem",
    "carebus.events.PatientDied",
)

#: Alert schemas, written by the stream workers and integrators.
ALERT_SCHEMAS: tuple[str, ...] = (
    "carebus.alerts.Alert",
    "carebus.alerts.AlertStatusChange",
)

#: Records on the events topic that are not events: how far each feed has been
#: stored (written by the ingest processes, read by the workers' clock).
FEED_SCHEMAS: tuple[str, ...] = ("carebus.events.FeedWatermark",)

#: Every schema that is encoded on its own.
RECORD_SCHEMAS: tuple[str, ...] = EVENT_SCHEMAS + ALERT_SCHEMAS + FEED_SCHEMAS


def _load(directory: Path) -> dict[str, dict[str, Any]]:
    definitions = read_definitions(directory)
    return {name: expand(name, definitions) for name in RECORD_SCHEMAS if name in definitions}


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def _load_released(directory: Path) -> dict[str, dict[str, dict[str, Any]]]:
    if not directory.is_dir():
        return {}
    versions = sorted(
        (p for p in directory.iterdir() if p.is_dir()), key=lambda p: _version_key(p.name)
    )
    return {path.name: _load(path) for path in versions}


_CURRENT = _load(SCHEMA_DIR)
_RELEASED = _load_released(RELEASED_DIR)


def schema(name: str) -> dict[str, Any]:
    """The current, self-contained JSON schema of a top-level record (do not mutate)."""
    try:
        return _CURRENT[name]
    except KeyError:
        raise UnknownSchema(f"no schema named {name}") from None


def released_versions() -> tuple[str, ...]:
    """The released schema versions kept under ``released/``, oldest first."""
    return tuple(_RELEASED)


def released_schema(version: str, name: str) -> dict[str, Any] | None:
    """The schema ``name`` as released in ``version``, or None if it did not exist then."""
    return _RELEASED.get(version, {}).get(name)


def fingerprint(schema_json: Any) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint (little-endian) of a schema's canonical form."""
    return bytes.fromhex(
        _fastavro_fingerprint(to_parsing_canonical_form(schema_json), "CRC-64-AVRO")
    )


__all__ = [
    "ALERT_SCHEMAS",
    "EVENT_SCHEMAS",
    "RECORD_SCHEMAS",
    "SCHEMA_DIR",
    "fingerprint",
    "released_schema",
    "released_versions",
    "schema",
]
