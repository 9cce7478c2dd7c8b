"""The coordination alert a rule raises (the rules spec's Output section)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from streams.deadlines import from_micros

#: JSON string literal of a str (the C encoder ``json.dumps`` uses itself)
_str: Callable[[str], str] = encode_basestring_ascii


@dataclass(frozen=True, slots=True)
class Alert:
    """One coordination alert.

    ``recipients`` are provider codes, sorted and unique, never empty; ``evidence``
    the MSH-10 control ids of the messages that caused it; ``raised_at`` an event
    time (or a deadline computed from event times), timezone-aware.
    Build one with :meth:`create`, which normalises recipients.
    """

    rule: str
    patient: str
    raised_at: datetime
    recipients: tuple[str, ...]
    dedup_key: str
    evidence: tuple[str, ...]
    summary: str

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError(f"alert {self.rule} has no recipients")
        if self.raised_at.tzinfo is None:
            raise ValueError(f"alert {self.rule} has a naive raised_at")

    @classmethod
    def create(
        cls,
        *,
        rule: str,
        patient: str,
        raised_at: int | datetime,
        recipients: Iterable[str],
        fallback: str,
        dedup_key: str,
        evidence: Iterable[str],
        summary: str,
    ) -> Alert:
        """An alert raised at ``raised_at``: epoch microseconds, or an aware datetime.

        Rules pass a deadline's due time in microseconds, or the event time of the
        message itself (already a datetime, so not converted back and forth).

        Empty recipient codes are dropped; when none is left the alert goes to
        ``fallback`` (the sending provider), as the spec requires.
        """
        named = set(recipients)
        named.discard("")
        unique = tuple(sorted(named)) if named else (fallback or "unknown",)
        return cls(
            rule,
            patient,
            from_micros(raised_at) if isinstance(raised_at, int) else raised_at,
            unique,
            dedup_key,
            tuple(dict.fromkeys(evidence)),
            summary,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the spec: ``raised_at`` in ISO 8601 with a UTC offset."""
        return {
            "rule": self.rule,
            "patient": self.patient,
            "raised_at": (
                self.raised_at if self.raised_at.tzinfo is UTC else self.raised_at.astimezone(UTC)
            ).isoformat(),
            "recipients": list(self.recipients),
            "dedup_key": self.dedup_key,
            "evidence": list(self.evidence),
            "summary": self.summary,
        }

    def to_json(self) -> str:
        """One JSON line (without the newline); the same text as ``json.dumps(to_dict())``."""
        raised_at = self.raised_at
        if raised_at.tzinfo is not UTC:
            raised_at = raised_at.astimezone(UTC)
        return (
            f'{{"rule": {_str(self.rule)}, "patient": {_str(self.patient)}, '
            f'"raised_at": "{raised_at.isoformat()}", '
            f'"recipients": [{", ".join(map(_str, self.recipients))}], '
            f'"dedup_key": {_str(self.dedup_key)}, '
            f'"evidence": [{", ".join(map(_str, self.evidence))}], '
            f'"summary": {_str(self.summary)}}}'
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Alert:
        """Inverse of :meth:`to_dict`."""
        return cls(
            rule=str(raw["rule"]),
            patient=str(raw["patient"]),
            raised_at=datetime.fromisoformat(str(raw["raised_at"])),
            recipients=tuple(sorted({str(r) for r in raw["recipients"]})),
            dedup_key=str(raw["dedup_key"]),
            evidence=tuple(str(e) for e in raw["evidence"]),
            summary=str(raw.get("summary", "")),
        )
