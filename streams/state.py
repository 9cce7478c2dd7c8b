"""Everything the rules remember about one patient, JSON-serialisable.

A :class:`PatientState` is owned by one patient key and changed only by the engine
(:mod:`streams.observe` records facts, :mod:`streams.engine` schedules deadlines
and remembers raised alerts). Rules only read it. Times are epoch microseconds
(:mod:`streams.deadlines`).

``to_dict`` gives plain JSON types (for Faust tables); ``from_dict`` reverses it.
Which identity-unverified alerts were raised (per sending provider and local
identifier) is part of ``raised``, like every other dedup key.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass
from typing import Any, Final

from streams.deadlines import YEAR, Deadline

FORMAT_VERSION: Final = 1


@dataclass(slots=True)
class Appointment:
    """A booked appointment (``SIU^S12``) not cancelled since."""

    provider: str
    start: int
    control_id: str


@dataclass(slots=True)
class FinalResult:
    """The latest final result for one test code from one provider."""

    time: int
    control_id: str


@dataclass(slots=True)
class Pathway:
    """An open suspected-cancer pathway started by a referral to ``hospital``."""

    start: int
    hospital: str
    referrer: str
    control_id: str
    booked: bool = False
    seen: bool = False


@dataclass(slots=True)
class Discharge:
    """A hospital discharge to a hospice, waiting for the hospice admission."""

    start: int
    hospital: str
    control_id: str


@dataclass(slots=True)
class Death:
    """The first message that showed the patient dead."""

    time: int
    event_time: int
    sender: str
    control_id: str


class PatientState:
    """The per-patient memory of the rule engine."""

    __slots__ = (
        "appointments",
        "closed",
        "deadlines",
        "death",
        "discharges",
        "emergencies",
        "eol",
        "eol_changed",
        "key",
        "pathways",
        "raised",
        "referred",
        "results",
        "seen",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        #: provider -> time of the latest message it sent about the patient
        self.seen: dict[str, int] = {}
        #: provider -> time of the latest referral sent to it
        self.referred: dict[str, int] = {}
        #: on the end-of-life register, and when that last changed (None: never)
        self.eol = False
        self.eol_changed: int | None = None
        self.death: Death | None = None
        #: filler appointment id -> pending appointment
        self.appointments: dict[str, Appointment] = {}
        #: test code -> provider -> latest final result
        self.results: dict[str, dict[str, FinalResult]] = {}
        #: emergency admissions: message reference -> (event time, MSH-10)
        self.emergencies: dict[str, tuple[int, str]] = {}
        #: open suspected-cancer pathways by episode reference
        self.pathways: dict[str, Pathway] = {}
        #: hospice discharges waiting for a hospice admission, by episode reference
        self.discharges: dict[str, Discharge] = {}
        #: pending deadlines, sorted by due time
        self.deadlines: list[Deadline] = []
        #: dedup keys of every alert raised for this patient
        self.raised: set[str] = set()
        #: episode references that were closed and must never be reopened by a replay
        self.closed: set[str] = set()

    # -- queries -------------------------------------------------------------------

    def care_team(self, at: int) -> list[str]:
        """Providers that sent a message about the patient in the 365 days up to ``at``."""
        since = at - YEAR
        return [p for p, t in self.seen.items() if t >= since]

    def next_deadline(self) -> int | None:
        """The earliest pending deadline, or None."""
        return self.deadlines[0].due if self.deadlines else None

    # -- deadlines -----------------------------------------------------------------

    def add_deadline(self, deadline: Deadline) -> None:
        """Schedule ``deadline`` (kept sorted; an identical one is not added twice)."""
        if deadline not in self.deadlines:
            insort(self.deadlines, deadline)

    def pop_due(self, now: int) -> list[Deadline]:
        """Remove and return the deadlines due at or before ``now``, earliest first."""
        count = 0
        for deadline in self.deadlines:
            if deadline.due > now:
                break
            count += 1
        due, self.deadlines = self.deadlines[:count], self.deadlines[count:]
        return due

    def drop_deadlines(self, ref: str) -> None:
        """Forget every deadline of episode ``ref``."""
        self.deadlines = [d for d in self.deadlines if d.ref != ref]

    def has_deadlines(self, ref: str) -> bool:
        """True while some deadline of episode ``ref`` is pending."""
        return any(d.ref == ref for d in self.deadlines)

    def close_episode(self, ref: str) -> None:
        """Close a pathway or discharge: no deadline of it fires, a replay cannot reopen it."""
        self.pathways.pop(ref, None)
        self.discharges.pop(ref, None)
        self.drop_deadlines(ref)
        self.closed.add(ref)

    # -- merges --------------------------------------------------------------------

    def absorb(self, retired: PatientState) -> None:
        """Take over everything known under ``retired`` (an ``ADT^A40`` merge)."""
        for provider, t in retired.seen.items():
            if t > self.seen.get(provider, t - 1):
                self.seen[provider] = t
        for provider, t in retired.referred.items():
            if t > self.referred.get(provider, t - 1):
                self.referred[provider] = t
        if retired.eol_changed is not None and (
            self.eol_changed is None or retired.eol_changed > self.eol_changed
        ):
            self.eol, self.eol_changed = retired.eol, retired.eol_changed
        if retired.death is not None and (
            self.death is None or retired.death.time < self.death.time
        ):
            self.death = retired.death
        for filler_id, appointment in retired.appointments.items():
            self.appointments.setdefault(filler_id, appointment)
        for code, by_provider in retired.results.items():
            mine = self.results.setdefault(code, {})
            for provider, result in by_provider.items():
                if provider not in mine or result.time > mine[provider].time:
                    mine[provider] = result
        self.emergencies.update(retired.emergencies)
        self.closed |= retired.closed
        self.raised |= retired.raised
        for ref, pathway in retired.pathways.items():
            if ref not in self.closed:
                self.pathways.setdefault(ref, pathway)
        for ref, discharge in retired.discharges.items():
            if ref not in self.closed:
                self.discharges.setdefault(ref, discharge)
        for deadline in retired.deadlines:
            if deadline.ref not in self.closed:
                self.add_deadline(deadline)
        if self.death is not None:
            for ref in list(self.pathways) + list(self.discharges):
                self.close_episode(ref)

    # -- JSON ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only."""
        death = self.death
        return {
            "v": FORMAT_VERSION,
            "key": self.key,
            "seen": dict(self.seen),
            "referred": dict(self.referred),
            "eol": self.eol,
            "eol_changed": self.eol_changed,
            "death": None
            if death is None
            else [death.time, death.event_time, death.sender, death.control_id],
            "appointments": {
                k: [a.provider, a.start, a.control_id] for k, a in self.appointments.items()
            },
            "results": {
                code: {p: [r.time, r.control_id] for p, r in by.items()}
                for code, by in self.results.items()
            },
            "emergencies": {k: [t, c] for k, (t, c) in self.emergencies.items()},
            "pathways": {
                k: [p.start, p.hospital, p.referrer, p.control_id, p.booked, p.seen]
                for k, p in self.pathways.items()
            },
            "discharges": {
                k: [d.start, d.hospital, d.control_id] for k, d in self.discharges.items()
            },
            "deadlines": [d.to_list() for d in self.deadlines],
            "raised": sorted(self.raised),
            "closed": sorted(self.closed),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PatientState:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on an unknown format."""
        if raw.get("v") != FORMAT_VERSION:
            raise ValueError(f"unknown patient state format {raw.get('v')!r}")
        state = cls(str(raw["key"]))
        state.seen = {str(k): int(v) for k, v in raw["seen"].items()}
        state.referred = {str(k): int(v) for k, v in raw["referred"].items()}
        state.eol = bool(raw["eol"])
        state.eol_changed = None if raw["eol_changed"] is None else int(raw["eol_changed"])
        if raw["death"] is not None:
            t, et, sender, control_id = raw["death"]
            state.death = Death(int(t), int(et), str(sender), str(control_id))
        state.appointments = {
            str(k): Appointment(str(p), int(s), str(c))
            for k, (p, s, c) in raw["appointments"].items()
        }
        state.results = {
            str(code): {str(p): FinalResult(int(t), str(c)) for p, (t, c) in by.items()}
            for code, by in raw["results"].items()
        }
        state.emergencies = {str(k): (int(t), str(c)) for k, (t, c) in raw["emergencies"].items()}
        state.pathways = {
            str(k): Pathway(int(s), str(h), str(r), str(c), bool(b), bool(seen))
            for k, (s, h, r, c, b, seen) in raw["pathways"].items()
        }
        state.discharges = {
            str(k): Discharge(int(s), str(h), str(c)) for k, (s, h, c) in raw["discharges"].items()
        }
        state.deadlines = sorted(Deadline.from_list(d) for d in raw["deadlines"])
        state.raised = {str(k) for k in raw["raised"]}
        state.closed = {str(k) for k in raw["closed"]}
        return state

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PatientState):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        # No patient data: the key may be an NHS number.
        return (
            f"PatientState(<key>, providers={len(self.seen)}, "
            f"deadlines={len(self.deadlines)}, raised={len(self.raised)})"
        )
