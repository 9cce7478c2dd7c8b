"""A rule that raises does not lose the event: the engine-errors topic. Pure.

When the rule engine raises on an event (or on a patient's deadline), the
:class:`~streams.coordinator.Coordinator` keeps the patient's state as it was
(the event's effect is not applied), records an :class:`EngineFailure` and goes
on with the partition. The worker turns each failure into one record of the
engine-errors topic (``TopicNames.engine_errors``, retention
``LONG_RETENTION_MS``; it holds event records, so it is as sensitive as the
events topic) with :func:`failure_record`, counts it
(``carebus_worker_engine_errors_total{stage,rule}``) and raises an ops alert
(``engine-error`` on the ops topic, at most one per stage, rule and error type
every :data:`OPS_ALERT_INTERVAL_S`; see :class:`EngineErrorReporter`). The record
is handed to the producer before the batch's offsets are committed.

An engine-errors record is:

- value: the event record's value **exactly as consumed** (the Avro bytes), empty
  for a deadline failure;
- key: the record's key as consumed (the patient key);
- partition: the events partition it was consumed from;
- headers: the consumed record's headers, unchanged, followed by ``carebus-engine-error-*``
  headers (:data:`HEADER_PREFIX`): ``stage`` (``event`` or ``deadline``), ``rule``
  (the rule id, when the failing frame is a rule's; absent when the failure was
  elsewhere in the engine), ``error`` (the exception's type, module-qualified),
  ``message`` (only for carebus's own errors: other messages may hold patient
  data, the policy of :func:`carebus.log.render_exception`), ``topic``,
  ``partition`` and ``offset`` of the consumed record, ``digest`` (SHA-256 hex of
  the value) and ``at`` (wall clock, epoch ms).

Replaying once the rule is fixed (``carebus engine-errors replay``,
``docs/operations.md``): an ``event`` record is produced again to the events
topic, same key, same partition, same value, its original headers (the
``carebus-engine-error-*`` ones dropped) plus ``carebus-replayed-from``. The worker
applies it as a new event (a new offset), after the events that followed the
failed one. A ``deadline`` record needs no replay: the failed deadline stays in
the patient's table entry and fires again when the partition is next assigned
(a restart of the worker with the fixed rule), or before the patient's next event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal

from carebus.errors import CarebusError

Stage = Literal["event", "deadline"]

HEADER_PREFIX: Final = "carebus-engine-error-"
REPLAYED_HEADER: Final = "carebus-replayed-from"
OPS_KIND: Final = "engine-error"
#: At most one ops alert per (stage, rule, error type) in this many seconds.
OPS_ALERT_INTERVAL_S: Final = 300.0

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class EngineFailure:
    """The rule engine raised on one record (or one deadline) of an events partition."""

    stage: Stage
    rule: str | None
    error: str
    message: str | None
    partition: int
    #: offset of the consumed record; -1 for a deadline
    offset: int
    #: ``e`` (events topic) or ``c`` (control topic: an event forwarded after a merge)
    source: str
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def digest(self) -> str:
        """SHA-256 hex of the value (the same bytes give the same digest everywhere)."""
        return hashlib.sha256(self.value).hexdigest()


def describe(exc: BaseException) -> tuple[str, str | None]:
    """The error type (module-qualified) and, only for carebus's own errors, the message."""
    kind = type(exc)
    name = f"{kind.__module__}.{kind.__qualname__}"
    return name, (str(exc) if isinstance(exc, CarebusError) else None)


def pairs(headers: Any) -> tuple[tuple[str, bytes], ...]:
    """Consumed headers ((name, value) pairs, or a mapping) as a tuple of pairs."""
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, dict) else headers
    return tuple((str(name), bytes(value or b"")) for name, value in items)


def rule_of(exc: BaseException, rules: Iterable[Any]) -> str | None:
    """The id of the rule whose code raised ``exc`` (its innermost frame), else None.

    A frame matches a rule when it runs the rule's ``on_event`` or ``on_deadline``
    function, or any code of a module that holds exactly one rule's functions.
    """
    by_code: dict[Any, str] = {}
    modules: dict[str, set[str]] = {}
    for rule in rules:
        for fn in (getattr(rule, "on_event", None), getattr(rule, "on_deadline", None)):
            code = getattr(fn, "__code__", None)
            if code is not None:
                by_code[code] = rule.id
            module = getattr(fn, "__module__", None)
            if module:
                modules.setdefault(module, set()).add(rule.id)
    found: str | None = None
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        rule_id = by_code.get(frame.f_code)
        if rule_id is None:
            owners = modules.get(str(frame.f_globals.get("__name__", "")))
            if owners is not None and len(owners) == 1:
                rule_id = next(iter(owners))
        if rule_id is not None:
            found = rule_id
        tb = tb.tb_next
    return found


def failure_record(
    failure: EngineFailure, *, source_topic: str, at_ms: int
) -> tuple[bytes | None, bytes, Headers]:
    """The (key, value, headers) of ``failure``'s engine-errors record (module docstring)."""
    ours: Headers = [("stage", failure.stage.encode())]
    if failure.rule is not None:
        ours.append(("rule", failure.rule.encode("utf-8")))
    ours.append(("error", failure.error.encode("utf-8")))
    if failure.message is not None:
        ours.append(("message", failure.message.encode("utf-8")))
    ours += [
        ("topic", source_topic.encode("utf-8")),
        ("partition", str(failure.partition).encode()),
        ("offset", str(failure.offset).encode()),
        ("digest", failure.digest.encode()),
        ("at", str(at_ms).encode()),
    ]
    headers = [*failure.headers, *((HEADER_PREFIX + k, v) for k, v in ours)]
    key = None if failure.key is None else failure.key.encode("utf-8")
    return key, failure.value, headers


def error_headers(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """The ``carebus-engine-error-*`` headers of a record, without the prefix."""
    return {
        name[len(HEADER_PREFIX) :]: raw.decode("utf-8", "replace")
        for name, raw in headers
        if name.startswith(HEADER_PREFIX)
    }


def replay_record(
    key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]], *, where: str
) -> tuple[bytes | None, bytes, Headers, int] | None:
    """(key, value, headers, partition) to produce to the events topic again; None for a
    record that is not a replayable event failure (a deadline, or not an engine error).

    ``where`` names the engine-errors record (``topic:partition:offset``), kept in
    the :data:`REPLAYED_HEADER` header.
    """
    ours = error_headers(headers)
    if ours.get("stage") != "event" or "partition" not in ours or not value:
        return None
    original = [(n, v) for n, v in headers if not n.startswith(HEADER_PREFIX)]
    original = [(n, v) for n, v in original if n != REPLAYED_HEADER]
    original.append((REPLAYED_HEADER, where.encode("utf-8")))
    return key, value, original, int(ours["partition"])


@dataclass
class EngineErrorReporter:
    """Which engine failures raise an ops alert now (throttled; see the module docstring)."""

    interval_s: float = OPS_ALERT_INTERVAL_S
    #: (stage, rule, error) -> (when the last ops alert was raised, failures since)
    _last: dict[tuple[str, str, str], tuple[float, int]] = field(default_factory=dict)

    def ops_alerts(self, failures: Sequence[EngineFailure], now_s: float) -> list[bytes]:
        """The ops alerts (JSON, never patient data) to publish for ``failures`` at ``now_s``."""
        out: list[bytes] = []
        for failure in failures:
            what = (failure.stage, failure.rule or "", failure.error)
            last = self._last.get(what)
            if last is not None and now_s - last[0] < self.interval_s:
                self._last[what] = (last[0], last[1] + 1)
                continue
            suppressed = 0 if last is None else last[1]
            self._last[what] = (now_s, 0)
            out.append(ops_alert(failure, now_s, suppressed))
        return out


def ops_alert(failure: EngineFailure, now_s: float, suppressed: int = 0) -> bytes:
    """The ops-topic JSON of one engine failure (``suppressed``: similar ones not alerted)."""
    rule = failure.rule or "(engine)"
    body = {
        "kind": OPS_KIND,
        "stage": failure.stage,
        "rule": failure.rule,
        "error": failure.error,
        "partition": failure.partition,
        "offset": failure.offset,
        "digest": failure.digest,
        "raised_at_ms": int(now_s * 1000),
        "suppressed_since_last": suppressed,
        "summary": (
            f"Rule engine failed ({failure.error}) in {rule} on "
            f"{'an event' if failure.stage == 'event' else 'a deadline'}; the record is on "
            "the engine-errors topic, to replay once fixed"
        ),
    }
    return json.dumps(body, sort_keys=True).encode("utf-8")
