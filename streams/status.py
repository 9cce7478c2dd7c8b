"""The status of an alert: raised (open), acknowledged, resolved. Pure.

The status topic (``TopicNames.alert_status``, compacted) carries two kinds of
record, told apart by their Avro schema:

- ``carebus.alerts.Alert``: written by the worker (at least once) just before the
  transaction that publishes the alert, so the status table knows every raised
  alert no later than integrators do. Keyed ``{dedup_key}/alert``
  (:func:`body_key`) and written to the partition of the plain dedup key
  (``streams.control.partition_for``), so compaction never collapses an alert's
  body with its status changes, and both land on the partition that owns the
  alert. (Records of the first release, keyed by the plain dedup key, are read
  too.)
- ``carebus.alerts.AlertStatusChange``: written by integrators (or
  ``carebus alerts ack|resolve``), keyed by the dedup key: ``ACKNOWLEDGED`` or
  ``RESOLVED``, by whom, when.

The worker folds them with :func:`apply` into one JSON value per dedup key, kept
in a table and served by the worker's web endpoint.

Status only moves forward, whatever order the records are read in (a replay,
a restore, a compacted topic re-read from its start): the statuses are ordered
``UNKNOWN < OPEN < ACKNOWLEDGED < RESOLVED`` (:data:`RANK`) and the status after a
record is the higher of the status before and the one the record gives (a join
on that order), so the same records give the same status in any order, and a
record applied twice changes nothing.
``RESOLVED`` is final; an acknowledgement after it is kept in the history but
does not reopen the alert. Applying the same record twice changes nothing. The
value keeps the ``decisive`` change: the one that set the current status.

Compaction keeps the **last** change per dedup key. So that a late
acknowledgement of a resolved alert cannot become the only change left, the
worker writes the decisive change again after a change that ranks below the
status (:func:`dominated`, :func:`reassert`): the last change of every key is then
one of the highest rank, and re-reading the compacted topic gives the same status.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

ALERT: Final = "carebus.alerts.Alert"
CHANGE: Final = "carebus.alerts.AlertStatusChange"
STATUS_VERSION: Final = 1
#: The most history entries kept per alert (the oldest go first).
MAX_HISTORY: Final = 50

#: Suffix of the Kafka key of an alert body on the status topic (:func:`body_key`).
BODY_SUFFIX: Final = "/alert"

Status = Literal["OPEN", "ACKNOWLEDGED", "RESOLVED", "UNKNOWN"]

#: The order statuses move in; a status never moves to a lower rank.
RANK: Final[Mapping[str, int]] = {"UNKNOWN": 0, "OPEN": 1, "ACKNOWLEDGED": 2, "RESOLVED": 3}


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


def body_key(dedup_key: str) -> str:
    """The Kafka key of an alert's body on the status topic."""
    return dedup_key + BODY_SUFFIX


def dedup_key_of(key: str, schema: str, record: Mapping[str, Any]) -> str:
    """The alert a status record keyed ``key`` is about (the status table's key).

    A change must be keyed by its dedup key; an alert body by :func:`body_key` of it
    (or, as the first release wrote, by the dedup key). :class:`BadStatusRecord`
    otherwise, or for a record of another schema.
    """
    if schema not in (ALERT, CHANGE):
        raise BadStatusRecord("not an alert or alert status change")
    dedup_key = record.get("dedup_key")
    if not isinstance(dedup_key, str) or not dedup_key:
        raise BadStatusRecord("record without a dedup key")
    if key == dedup_key or (schema == ALERT and key == body_key(dedup_key)):
        return dedup_key
    raise BadStatusRecord("dedup key of the record differs from its Kafka key")


def apply(
    current: dict[str, Any] | None, key: str, schema: str, record: dict[str, Any]
) -> dict[str, Any] | None:
    """``current`` (None: nothing yet) after the status record ``record`` keyed ``key``.

    Returns None when the record changes nothing. Raises :class:`BadStatusRecord`
    for a record of another schema or whose dedup key does not match its Kafka key
    (:func:`dedup_key_of`). The status never moves back (module docstring).
    """
    dedup_key = dedup_key_of(key, schema, record)
    status = new_status(dedup_key) if current is None else _copy(current)
    before = str(status["status"])
    change: dict[str, Any] | None = None
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
    status["status"] = join(before, derive(status))
    if change is not None and status["status"] != before and change["action"] == status["status"]:
        status["decisive"] = change
    return status


def join(a: str, b: str) -> Status:
    """The higher of two statuses (:data:`RANK`)."""
    high = a if RANK.get(a, 0) >= RANK.get(b, 0) else b
    return high if high in RANK else "UNKNOWN"  # type: ignore[return-value]


def dominated(current: Mapping[str, Any] | None, schema: str, record: Mapping[str, Any]) -> bool:
    """True for a change that ranks below ``current``'s status (it cannot move it)."""
    if current is None or schema != CHANGE:
        return False
    return RANK.get(str(record.get("action")), 0) < RANK.get(str(current.get("status")), 0)


def reassert(current: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``AlertStatusChange`` record that set ``current``'s status, to write again.

    None when no change set it (an open alert) or it is no longer known (a value of
    the first release whose history lost it).
    """
    decisive = current.get("decisive")
    if decisive is None:
        decisive = next(
            (h for h in current.get("history") or () if h.get("action") == current.get("status")),
            None,
        )
    if decisive is None or decisive.get("action") not in ("ACKNOWLEDGED", "RESOLVED"):
        return None
    at = datetime.fromisoformat(str(decisive["at"]))
    return {
        "dedup_key": str(current["dedup_key"]),
        "action": str(decisive["action"]),
        "by": str(decisive["by"]),
        "at": at if at.tzinfo is not None else at.replace(tzinfo=UTC),
        "note": decisive.get("note"),
    }


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
