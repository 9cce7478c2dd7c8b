"""The status of an alert: raised (open), acknowledged, resolved. Pure.

The status topic (``TopicNames.alert_status``, compacted, keyed by dedup key)
carries two kinds of record, told apart by their Avro schema:

- ``carebus.alerts.Alert``: written by the worker (at least once) just before the
  transaction that publishes the alert, so the status table knows every raised
  alert no later than integrators do;
- ``carebus.alerts.AlertStatusChange``: written by integrators (or
  ``carebus alerts ack|resolve``): ``ACKNOWLEDGED`` or ``RESOLVED``, by whom, when.

The worker folds them with :func:`apply` into one JSON value per dedup key, kept
in a table and served by the worker's web endpoint. ``RESOLVED`` is final; an
acknowledgement after it is kept in the history but does not reopen the alert.
Applying the same record twice changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

ALERT: Final = "carebus.alerts.Alert"
CHANGE: Final = "carebus.alerts.AlertStatusChange"
STATUS_VERSION: Final = 1
#: The most history entries kept per alert (the oldest go first).
MAX_HISTORY: Final = 50

Status = Literal["OPEN", "ACKNOWLEDGED", "RESOLVED", "UNKNOWN"]


class BadStatusRecord(ValueError):
    """A status topic record that cannot be applied (wrong schema or key)."""


def new_status(dedup_key: str) -> dict[str, Any]:
    """The status of an alert nothing is known about yet."""
    return {
        "v": STATUS_VERSION,
        "dedup_key": dedup_key,
        "status": "UNKNOWN",
        "alert": None,
        "history": [],
    }


def apply(
    current: dict[str, Any] | None, key: str, schema: str, record: dict[str, Any]
) -> dict[str, Any] | None:
    """``current`` (None: nothing yet) after the status record ``record`` keyed ``key``.

    Returns None when the record changes nothing. Raises :class:`BadStatusRecord`
    for a record of another schema or whose dedup key is not its Kafka key.
    """
    if schema not in (ALERT, CHANGE):
        raise BadStatusRecord("not an alert or alert status change")
    if record.get("dedup_key") != key:
        raise BadStatusRecord("dedup key of the record differs from its Kafka key")
    status = new_status(key) if current is None else _copy(current)
    if schema == ALERT:
        if status["alert"] is not None:
            return None
        status["alert"] = _alert_json(record)
    else:
        change = {
            "action": str(record["action"]),
            "by": str(record["by"]),
            "at": _iso(record["at"]),
            "note": record.get("note"),
        }
        if change in status["history"]:
            return None
        status["history"] = [*status["history"], change][-MAX_HISTORY:]
    status["status"] = derive(status)
    return status


def derive(status: dict[str, Any]) -> Status:
    """The current status from the alert and its history."""
    actions = {h["action"] for h in status["history"]}
    if "RESOLVED" in actions:
        return "RESOLVED"
    if "ACKNOWLEDGED" in actions:
        return "ACKNOWLEDGED"
    return "OPEN" if status["alert"] is not None else "UNKNOWN"


def _copy(current: dict[str, Any]) -> dict[str, Any]:
    if current.get("v") != STATUS_VERSION:
        raise ValueError(f"unknown alert status format {current.get('v')!r}")
    return {**current, "history": list(current["history"])}


def _alert_json(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "rule": str(record["rule"]),
        "patient": str(record["patient"]),
        "raised_at": _iso(record["raised_at"]),
        "recipients": [str(r) for r in record["recipients"]],
        "dedup_key": str(record["dedup_key"]),
        "evidence": [str(e) for e in record["evidence"]],
        "summary": str(record["summary"]),
    }


def _iso(moment: Any) -> str:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return str(moment.astimezone(UTC).isoformat())
    if isinstance(moment, int):
        return datetime.fromtimestamp(moment / 1000, UTC).isoformat()
    return str(moment)
