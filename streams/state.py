"""Everything the rules remember about one patient, JSON-serialisable.

A :class:`PatientState` is owned by one patient key and changed only by the engine
(:mod:`streams.observe` records facts, :mod:`streams.engine` schedules deadlines
and remembers raised alerts). Rules only read it. Times are epoch microseconds
(:mod:`streams.deadlines`).

``to_dict`` gives plain JSON types (for Faust tables); ``from_dict`` reverses it.
Which identity-unverified alerts were raised (per sending provider and local
identifier) is part of ``raised``, like every other dedup key.

Look-back windows are judged by event time, not arrival order (rules spec 1.1,
Clock): a message that arrives earlier but carries a later event time is not in
the window before an earlier event. So the history the look-back rules read keeps
event times, not just "the latest":

- ``seen`` / ``referred``: per provider, the sorted event times of its messages
  (of the referrals to it). A time is dropped when the times kept either side of
  it are at most 365 days apart: every window of 365 days that holds it holds one
  of them too, so at most about two times per provider per year are kept;
- ``results``: per test code and provider, every final result with its
  observation time and the event time of the message that reported it;
- ``emergencies``: every emergency admission with its event time.

History is forgotten once it is older than the longest window it serves plus
:data:`LATE` before the latest time of its kind: a message arriving up to
:data:`LATE` behind later-stamped ones is judged exactly; one arriving later
still is judged against what is left.

Format 2 (the lists above) replaced format 1 (the latest time per provider, the
latest result per code and provider); a format-1 state still loads: each latest
time becomes a one-time history, each result counts as reported when observed.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from streams.deadlines import DAY, YEAR, Deadline

FORMAT_VERSION: Final = 2
#: the formats :meth:`PatientState.from_dict` reads
READABLE_FORMATS: Final = frozenset({1, FORMAT_VERSION})

#: how far behind the latest recorded event time a message may arrive and still be
#: judged exactly against the look-back windows (history is kept that much longer)
LATE: Final = 30 * DAY
#: how long the contact history (care team, repeated-history) is kept: its window plus LATE
CONTACT_MEMORY: Final = YEAR + LATE


def remember_contact(times: list[int], t: int) -> None:
    """Add event time ``t`` to the sorted contact history ``times`` of one provider.

    Keeps only what answers "any contact in a 365-day window": a time whose
    neighbours are at most 365 days apart is dropped (every such window that holds
    it holds one of them), and times more than :data:`CONTACT_MEMORY` before the
    latest are forgotten. Arrival in event-time order costs an append.
    """
    if not times or t > times[-1]:
        times.append(t)
        if len(times) >= 3 and times[-1] - times[-3] <= YEAR:
            del times[-2]
        if times[0] < times[-1] - CONTACT_MEMORY:
            _forget_before(times, times[-1] - CONTACT_MEMORY)
        return
    i = bisect_left(times, t)
    if times[i] == t or t < times[-1] - CONTACT_MEMORY:
        return
    times.insert(i, t)
    i = 1
    while i < len(times) - 1:
        if times[i + 1] - times[i - 1] <= YEAR:
            del times[i]
        else:
            i += 1


def _forget_before(times: list[int], horizon: int) -> None:
    del times[: bisect_left(times, horizon)]


def contact_between(times: list[int] | None, since: int, until: int) -> bool:
    """True when the sorted ``times`` hold one in ``[since, until]`` (both ends included)."""
    if not times:
        return False
    last = times[-1]
    if last < since:
        return False
    if last <= until:  # the usual case: nothing stamped later has arrived
        return True
    return times[bisect_left(times, since)] <= until


def _merged_contacts(mine: list[int], theirs: Iterable[int]) -> list[int]:
    merged: list[int] = []
    for t in sorted({*mine, *theirs}):
        remember_contact(merged, t)
    return merged


@dataclass(slots=True)
class Appointment:
    """A booked appointment (``SIU^S12``) not cancelled since."""

    provider: str
    start: int
    control_id: str


@dataclass(slots=True)
class FinalResult:
    """A final result for one test code from one provider.

    ``time`` is when it was observed (``OBR-7``, else the message's event time),
    ``reported`` the event time of the message that carried it.
    """

    time: int
    control_id: str
    reported: int = 0

    def key(self) -> tuple[int, int]:
        """Order of results in a history: observed, then reported."""
        return (self.time, self.reported)


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
        #: provider -> event times of the messages it sent about the patient
        #: (sorted, sparse: see :func:`remember_contact`)
        self.seen: dict[str, list[int]] = {}
        #: provider -> event times of the referrals sent to it (likewise)
        self.referred: dict[str, list[int]] = {}
        #: on the end-of-life register, and when that last changed (None: never)
        self.eol = False
        self.eol_changed: int | None = None
        self.death: Death | None = None
        #: filler appointment id -> pending appointment
        self.appointments: dict[str, Appointment] = {}
        #: test code -> provider -> final results, by observation then report time
        self.results: dict[str, dict[str, list[FinalResult]]] = {}
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
        """Providers that sent a message about the patient in the 365 days up to ``at``.

        By event time: a message stamped after ``at`` does not count, whenever it arrived.
        """
        since = at - YEAR
        return [
            p
            for p, times in self.seen.items()
            if since <= times[-1] <= at or contact_between(times, since, at)
        ]

    def knows(self, provider: str, since: int, until: int) -> bool:
        """True when ``provider`` sent a message about the patient, or was sent a
        referral for them, with an event time in ``[since, until]``."""
        return contact_between(self.seen.get(provider), since, until) or contact_between(
            self.referred.get(provider), since, until
        )

    def anyone_knows(self, since: int, until: int) -> bool:
        """True when any provider sent a message or was sent a referral in ``[since, until]``."""
        return any(contact_between(t, since, until) for t in self.seen.values()) or any(
            contact_between(t, since, until) for t in self.referred.values()
        )

    def results_between(self, code: str, since: int, until: int) -> dict[str, FinalResult]:
        """Per provider, its latest final result for ``code`` observed in ``[since, until]``
        and reported (message event time) at or before ``until``."""
        found: dict[str, FinalResult] = {}
        for provider, results in self.results.get(code, {}).items():
            for result in reversed(results):
                if since <= result.time <= until and result.reported <= until:
                    found[provider] = result
                    break
        return found

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
        for provider, times in retired.seen.items():
            self.seen[provider] = _merged_contacts(self.seen.get(provider, []), times)
        for provider, times in retired.referred.items():
            self.referred[provider] = _merged_contacts(self.referred.get(provider, []), times)
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
            for provider, results in by_provider.items():
                held = mine.setdefault(provider, [])
                for result in results:
                    if result not in held:
                        insort(held, result, key=FinalResult.key)
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
            "seen": {p: list(times) for p, times in self.seen.items()},
            "referred": {p: list(times) for p, times in self.referred.items()},
            "eol": self.eol,
            "eol_changed": self.eol_changed,
            "death": None
            if death is None
            else [death.time, death.event_time, death.sender, death.control_id],
            "appointments": {
                k: [a.provider, a.start, a.control_id] for k, a in self.appointments.items()
            },
            "results": {
                code: {p: [[r.time, r.reported, r.control_id] for r in rs] for p, rs in by.items()}
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
        version = raw.get("v")
        if version not in READABLE_FORMATS:
            raise ValueError(f"unknown patient state format {version!r}")
        state = cls(str(raw["key"]))
        state.seen = {str(k): _contacts(v) for k, v in raw["seen"].items()}
        state.referred = {str(k): _contacts(v) for k, v in raw["referred"].items()}
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
            str(code): {str(p): _results(version, rs) for p, rs in by.items()}
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


def _contacts(raw: Any) -> list[int]:
    """A stored contact history; format 1 stored only the latest time."""
    if isinstance(raw, list):
        return [int(t) for t in raw]
    return [int(raw)]


def _results(version: object, raw: Any) -> list[FinalResult]:
    """A stored result history; format 1 stored only the latest, ``[time, control_id]``."""
    if version == 1:
        t, c = raw
        return [FinalResult(int(t), str(c), int(t))]
    return [FinalResult(int(t), str(c), int(r)) for t, r, c in raw]
