"""Patient journeys: what happens to one synthetic patient, as messages over time.

:func:`plan_journey` draws everything from the patient's own random stream, so a
patient's messages do not depend on any other patient. Three kinds of journey:

- **cancer**: a practice refers on the two-week-wait pathway (sometimes after a
  test its local trust reported); the hospital books, sees, tests and writes the
  outcome letter; some bookings, visits and letters are late or never come, and
  some patients are referred to another trust that repeats the practice's test.
  Some with cancer confirmed go on to end-of-life care.
- **end of life**: the practice puts the patient on the palliative care register;
  community and council services join in; emergency admissions (sometimes three
  in a few weeks), a discharge to a hospice with or without the hospice's
  admission, and a death reported by the hospital, the hospice or the practice,
  with appointments still booked elsewhere and, now and then, a booking made
  after the death.
- **routine**: registrations, outpatient referrals and visits, tests, and the
  odd emergency admission under a temporary number that is merged later.

Noise is added to every journey: demographic updates (A08), resent duplicates
(same MSH-10, same bytes), a provider that lacks or mistypes the NHS number, and
a few malformed messages, each followed by its corrected resend.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from carebus.synth import hl7, nhs
from carebus.synth.messages import (
    TESTS,
    Adt,
    Booking,
    Letter,
    Merge,
    Order,
    Referral,
    RegisterEntry,
    Result,
    Spec,
    Test,
)
from carebus.synth.people import Person
from carebus.synth.region import (
    CANCER_OUTCOME_DOCUMENT,
    CANCER_PRIORITY,
    EOL_REGISTER_CODE,
    Provider,
    SyntheticRegion,
)

#: Chance that a message is resent (same control id, same bytes).
DUPLICATE_RATE = 0.015
#: Chance that a message is sent malformed, then corrected and resent.
MALFORMED_RATE = 0.004
#: Chance that one provider lacks or mistypes the patient's NHS number.
IDENTITY_ISSUE_RATE = 0.05

_CANCER_REASONS = (
    "Suspected lower GI cancer",
    "Suspected lung cancer",
    "Suspected breast cancer",
    "Suspected urological cancer",
    "Suspected upper GI cancer",
    "Suspected gynaecological cancer",
)
_ROUTINE_REASONS = ("Breathlessness", "Chest pain", "Diabetes review", "Joint pain", "Falls")
_ROUTINE_CLINICS = (
    "RESP^Respiratory clinic",
    "CARD^Cardiology clinic",
    "DIAB^Diabetes clinic",
    "RHEU^Rheumatology clinic",
    "GERI^Falls clinic",
)


@dataclass(frozen=True, slots=True)
class Step:
    """One message of a journey: what, when sent and stamped, its control-id number."""

    sent: datetime
    stamped: datetime
    spec: Spec
    seq: int
    malformed: str | None = None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class SynthMessage:
    """A rendered message of the feed, with what the generator knows about it."""

    time: datetime
    raw: bytes
    control_id: str
    malformed: str | None
    duplicate: bool


@dataclass(slots=True)
class Journey:
    """One patient's planned messages, sorted by the time they are sent."""

    person: Person
    kind: str
    start: datetime
    steps: list[Step]
    identities: dict[str, hl7.Identity] = field(default_factory=dict)
    moved_at: datetime | None = None

    def control_id(self, seq: int) -> str:
        """MSH-10 of the journey's message number ``seq``: unique in the feed."""
        return f"S{self.person.index:09d}{seq:04d}"

    def render(self, step: Step) -> SynthMessage:
        """The message of ``step`` as it goes on the wire."""
        control_id = self.control_id(step.seq)
        identity = self.identities.get(step.spec.provider.code) or hl7.Identity(
            self.person.nhs_number
        )
        moved = self.moved_at is not None and step.spec.time >= self.moved_at
        raw = hl7.render(
            step.spec,
            self.person,
            control_id=control_id,
            sent=step.stamped,
            identity=identity,
            moved=moved,
            malformed=step.malformed,
        )
        return SynthMessage(step.sent, raw, control_id, step.malformed, step.duplicate)

    def __iter__(self) -> Iterator[SynthMessage]:
        for step in self.steps:
            yield self.render(step)


class _Planner:
    """Collects one patient's messages while a journey function runs."""

    def __init__(self, person: Person, rng: random.Random, region: SyntheticRegion):
        self.person = person
        self.rng = rng
        self.region = region
        self.specs: list[Spec] = []
        self._ids = 0

    def send(self, spec: Spec) -> None:
        self.specs.append(spec)

    def new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self.person.index:09d}{self._ids:03d}"

    def days(self, low: float, high: float) -> timedelta:
        return timedelta(days=self.rng.uniform(low, high))

    def hours(self, low: float, high: float) -> timedelta:
        return timedelta(hours=self.rng.uniform(low, high))

    def clinic_time(self, after: datetime) -> datetime:
        """A weekday working-hours moment at or after ``after`` (Europe/London)."""
        local = after.astimezone(hl7.LONDON)
        day = local.date()
        for _ in range(8):
            if day.weekday() < 5:
                slot = _at(day, 9, 0) + timedelta(minutes=15 * self.rng.randrange(32))
                if slot >= after:
                    return slot
            day += timedelta(days=1)
        raise AssertionError("no clinic slot in a week")  # pragma: no cover

    def other_hospital(self, than: Provider) -> Provider:
        return self.rng.choice([h for h in self.region.hospitals if h != than])

    def test_order(self, provider: Provider, at: datetime, test: Test) -> str:
        order_id = self.new_id("O")
        self.send(Order(provider, at, order_id, test))
        return order_id

    def test_result(
        self,
        lab: Provider,
        order_id: str,
        test: Test,
        observed: datetime,
        reported: datetime,
        *,
        placer: Provider | None = None,
    ) -> None:
        if test.numeric:
            abnormal = self.rng.random() < 0.3
            span = test.high - test.low
            value = (
                test.high + span * self.rng.uniform(0.05, 1.5)
                if abnormal
                else (self.rng.uniform(test.low, test.high))
            )
            text = f"{value:.1f}"
        else:
            abnormal = False
            text = "Reported. See clinic letter."
        if self.rng.random() < 0.15:
            preliminary = observed + (reported - observed) * self.rng.uniform(0.2, 0.8)
            self.send(
                Result(lab, preliminary, order_id, test, observed, "P", text, abnormal, placer)
            )
        self.send(Result(lab, reported, order_id, test, observed, "F", text, abnormal, placer))

    def admission(
        self,
        hospital: Provider,
        at: datetime,
        stay: timedelta,
        destination: str,
        admission_type: str = "E",
    ) -> datetime:
        """An inpatient stay (A01 then A03); returns the discharge time."""
        visit = self.new_id("V")
        ward = "AMU" if admission_type == "E" else "WARD3"
        out = at + stay
        self.send(Adt("A01", hospital, at, "I", ward, visit, admission_type, admit_time=at))
        self.send(
            Adt(
                "A03",
                hospital,
                out,
                "I",
                ward,
                visit,
                admission_type,
                admit_time=at,
                discharge_time=out,
                discharge_destination=destination,
            )
        )
        return out


def _at(day: date, hour: int, minute: int) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=hl7.LONDON)


def plan_journey(
    person: Person, rng: random.Random, region: SyntheticRegion, start: datetime
) -> Journey:
    """Plan every message of ``person``'s journey, all sent at or after ``start``."""
    planner = _Planner(person, rng, region)
    roll = rng.random()
    if roll < 0.4:
        kind = "cancer"
        _cancer(planner, start)
    elif roll < 0.65:
        kind = "end-of-life"
        _end_of_life(planner, start)
    else:
        kind = "routine"
        _routine(planner, start)
    return _with_noise(planner, kind, start)


def _cancer(pl: _Planner, start: datetime) -> None:
    rng, person = pl.rng, pl.person
    gp, local = person.practice, person.hospital
    hospital = local if rng.random() < 0.7 else pl.other_hospital(local)
    t = pl.clinic_time(start)
    prior_test: Test | None = None
    if rng.random() < 0.6:
        prior_test = TESTS[rng.choice(("PSA", "CEA", "CA125", "HBA1C"))]
        order_id = pl.test_order(gp, t, prior_test)
        reported = t + pl.days(0.5, 2)
        pl.test_result(local, order_id, prior_test, t + pl.hours(1, 4), reported, placer=gp)
        t = pl.clinic_time(reported + pl.days(0.2, 3))
    referred = t
    pl.send(
        Referral(
            gp, hospital, referred, pl.new_id("R"), CANCER_PRIORITY, rng.choice(_CANCER_REASONS)
        )
    )
    letter_due = _draw_letter_time(pl, referred)
    roll = rng.random()
    seen: datetime | None = None
    if roll < 0.95:
        booked = referred + (pl.days(0.3, 6) if roll < 0.85 else pl.days(7.5, 12))
        seen = _outpatient_visit(pl, hospital, booked, "ONC2WW^Two week wait clinic")
    if seen is not None:
        after_visit = seen + pl.hours(1, 3)
        if prior_test is not None and rng.random() < 0.7:
            _test(pl, hospital, after_visit, prior_test)
        _test(pl, hospital, after_visit, TESTS["HB"])
        if rng.random() < 0.7:
            _test(pl, hospital, after_visit + pl.days(1, 5), TESTS["CT"])
    emergency_until = referred + timedelta(days=28)
    # Open pathways (no outcome for four weeks) see the most emergency admissions.
    if (letter_due is None or letter_due > emergency_until) and rng.random() < 0.3:
        _emergency_run(pl, referred + pl.days(1, 4), count=3, within_days=25)
    if letter_due is None:
        return
    if seen is not None and letter_due < seen + timedelta(days=1):
        letter_due = pl.clinic_time(seen + pl.days(1, 3))
    confirmed = rng.random() < 0.35
    text = (
        "Outcome: cancer diagnosed. Treatment plan agreed at MDT."
        if confirmed
        else "Outcome: cancer ruled out. Discharged to GP care."
    )
    pl.send(Letter(hospital, letter_due, pl.new_id("D"), CANCER_OUTCOME_DOCUMENT, text))
    if not confirmed:
        return
    treated = pl.clinic_time(letter_due + pl.days(5, 20))
    out = pl.admission(hospital, treated, pl.days(1, 5), "19", admission_type="EL")
    if rng.random() < 0.3:
        _end_of_life(pl, out + pl.days(10, 60))


def _draw_letter_time(pl: _Planner, referred: datetime) -> datetime | None:
    """When the outcome letter is written: mostly in time, some late, a few never."""
    roll = pl.rng.random()
    if roll < 0.72:
        return pl.clinic_time(referred + pl.days(8, 18))
    if roll < 0.86:
        return pl.clinic_time(referred + pl.days(21.2, 25))
    if roll < 0.95:
        return pl.clinic_time(referred + pl.days(28.2, 40))
    return None


def _outpatient_visit(pl: _Planner, hospital: Provider, booked: datetime, clinic: str) -> datetime:
    """Book, perhaps move or miss, and attend a clinic; returns the attendance time."""
    rng = pl.rng
    appointment = pl.new_id("A")
    start = pl.clinic_time(booked + pl.days(1, 7))
    pl.send(Booking("S12", hospital, booked, appointment, start, clinic))
    if rng.random() < 0.05:
        start = pl.clinic_time(start + pl.days(1, 4))
        pl.send(Booking("S13", hospital, booked + pl.days(0.2, 1), appointment, start, clinic))
    if rng.random() < 0.05:
        pl.send(Booking("S26", hospital, start + pl.hours(1, 4), appointment, start, clinic))
        appointment = pl.new_id("A")
        rebooked = start + pl.hours(5, 30)
        start = pl.clinic_time(rebooked + pl.days(2, 7))
        pl.send(Booking("S12", hospital, rebooked, appointment, start, clinic))
    code = clinic.partition("^")[0]
    pl.send(Adt("A04", hospital, start, "O", code, pl.new_id("V"), admit_time=start))
    return start


def _test(pl: _Planner, provider: Provider, at: datetime, test: Test) -> None:
    order_id = pl.test_order(provider, at, test)
    reported = at + (pl.days(2, 6) if test.system == "L" else pl.hours(3, 30))
    pl.test_result(provider, order_id, test, at + pl.hours(0.2, 2), reported)


def _emergency_run(pl: _Planner, first: datetime, count: int, within_days: float) -> datetime:
    """``count`` emergency admissions spread over about ``within_days``; returns the
    last discharge time."""
    at = first
    out = first
    gap = within_days / count
    for _ in range(count):
        hospital = (
            pl.person.hospital if pl.rng.random() < 0.8 else pl.other_hospital(pl.person.hospital)
        )
        out = pl.admission(hospital, at, pl.days(0.5, gap * 0.5), "19")
        at = out + pl.days(0.5, gap * 0.5)
    return out


def _end_of_life(pl: _Planner, start: datetime) -> None:
    rng, person = pl.rng, pl.person
    gp, hospice = person.practice, person.hospice
    registered = pl.clinic_time(start)
    pl.send(
        RegisterEntry(
            "PC1", gp, registered, pl.new_id("P"), EOL_REGISTER_CODE, "On palliative care register"
        )
    )
    community_visit = pl.clinic_time(registered + pl.days(1, 7))
    pl.send(Adt("A04", pl.region.community, community_visit, "O", "DN", pl.new_id("V")))
    if rng.random() < 0.4:
        pl.send(Adt("A28", pl.region.council, pl.clinic_time(registered + pl.days(3, 14)), "N"))
    pending: list[tuple[Provider, str, datetime, str]] = []
    clinic_holder = person.hospital if rng.random() < 0.5 else pl.other_hospital(person.hospital)
    for provider, clinic, chance in (
        (clinic_holder, rng.choice(_ROUTINE_CLINICS), 0.8),
        (pl.region.community, "DNV^District nurse visit", 0.5),
        (hospice, "DAYH^Day hospice", 0.3),
    ):
        if rng.random() < chance:
            booked = pl.clinic_time(registered + pl.days(2, 10))
            appointment_start = pl.clinic_time(booked + pl.days(20, 70))
            appointment = pl.new_id("A")
            pl.send(Booking("S12", provider, booked, appointment, appointment_start, clinic))
            pending.append((provider, appointment, appointment_start, clinic))
    if rng.random() < 0.03:
        pl.send(
            RegisterEntry(
                "PC3",
                gp,
                pl.clinic_time(registered + pl.days(30, 60)),
                pl.new_id("P"),
                EOL_REGISTER_CODE,
                "On palliative care register",
            )
        )
        return
    last = registered + pl.days(2, 12)
    admissions = rng.choices((0, 1, 2, 3), weights=(20, 40, 10, 30))[0]
    died: datetime | None = None
    in_hospice: datetime | None = None
    for n in range(admissions):
        hospital = person.hospital if rng.random() < 0.8 else pl.other_hospital(person.hospital)
        final = n == admissions - 1
        destination = "19"
        if final:
            destination = rng.choices(("19", "88", "79", "54"), weights=(35, 35, 20, 10))[0]
        out = pl.admission(hospital, last, pl.days(0.5, 6), destination)
        if destination == "79":
            died = out
        elif destination == "88":
            roll = rng.random()
            if roll < 0.9:
                arrived = out + (pl.hours(2, 20) if roll < 0.75 else pl.hours(30, 60))
                pl.send(
                    Adt("A01", hospice, arrived, "I", "IPU", pl.new_id("V"), admit_time=arrived)
                )
                in_hospice = arrived
        last = out + pl.days(2, 12)
    if died is None:
        died = last + pl.days(1, 30)
        _report_death(pl, died, in_hospice)
    _after_death(pl, died, pending)


def _report_death(pl: _Planner, died: datetime, in_hospice: datetime | None) -> None:
    rng = pl.rng
    if in_hospice is not None:
        if rng.random() < 0.6:
            pl.send(
                Adt(
                    "A08",
                    pl.person.hospice,
                    died + pl.hours(1, 12),
                    "I",
                    "IPU",
                    death_time=died,
                    death_indicator=True,
                )
            )
        else:
            pl.send(
                Adt(
                    "A03",
                    pl.person.hospice,
                    died,
                    "I",
                    "IPU",
                    admit_time=in_hospice,
                    discharge_time=died,
                    discharge_destination="79",
                )
            )
        return
    roll = rng.random()
    pl.send(
        Adt(
            "A08",
            pl.person.practice,
            pl.clinic_time(died + pl.hours(4, 60)),
            "N",
            death_time=died if roll > 0.1 else None,
            death_indicator=roll < 0.9,
        )
    )


def _after_death(
    pl: _Planner, died: datetime, pending: list[tuple[Provider, str, datetime, str]]
) -> None:
    rng = pl.rng
    for provider, appointment, appointment_start, clinic in pending:
        if appointment_start > died and rng.random() < 0.5:
            cancelled = pl.clinic_time(died + pl.days(1, 5))
            if cancelled < appointment_start:
                pl.send(Booking("S15", provider, cancelled, appointment, appointment_start, clinic))
    if rng.random() < 0.15:
        hospital = pl.person.hospital
        booked = pl.clinic_time(died + pl.days(1, 10))
        pl.send(
            Booking(
                "S12",
                hospital,
                booked,
                pl.new_id("A"),
                pl.clinic_time(booked + pl.days(7, 30)),
                rng.choice(_ROUTINE_CLINICS),
            )
        )


def _routine(pl: _Planner, start: datetime) -> None:
    rng, person = pl.rng, pl.person
    gp, local = person.practice, person.hospital
    t = pl.clinic_time(start)
    if rng.random() < 0.4:
        pl.send(Adt("A04", gp, t, "O", "SURGERY", pl.new_id("V"), admit_time=t))
        t = pl.clinic_time(t + pl.days(1, 10))
    if rng.random() < 0.4:
        test = TESTS["HBA1C"]
        order_id = pl.test_order(gp, t, test)
        reported = t + pl.days(0.5, 2)
        pl.test_result(local, order_id, test, t + pl.hours(1, 4), reported, placer=gp)
        t = pl.clinic_time(reported + pl.days(1, 5))
    if rng.random() < 0.5:
        hospital = local if rng.random() < 0.8 else pl.other_hospital(local)
        priority = "U" if rng.random() < 0.3 else "R"
        pl.send(Referral(gp, hospital, t, pl.new_id("R"), priority, rng.choice(_ROUTINE_REASONS)))
        clinic = rng.choice(_ROUTINE_CLINICS)
        seen = _outpatient_visit(pl, hospital, t + pl.days(2, 15), clinic)
        if clinic.startswith("DIAB"):
            _test(pl, hospital, seen + pl.hours(1, 2), TESTS["HBA1C"])
        pl.send(
            Letter(
                hospital,
                seen + pl.days(2, 10),
                pl.new_id("D"),
                "CLINIC-LETTER",
                "Seen in clinic. Plan discussed with patient.",
            )
        )
        t = seen + pl.days(5, 20)
    if rng.random() < 0.15 or not pl.specs:
        _emergency_stay(pl, t + pl.days(1, 60))


def _emergency_stay(pl: _Planner, at: datetime) -> None:
    """An emergency admission, sometimes under a temporary number merged later."""
    hospital = pl.person.hospital
    if pl.rng.random() < 0.7:
        pl.admission(hospital, at, pl.days(0.3, 5), "19")
        return
    # Unconscious arrival: registered with a temporary hospital number and no NHS
    # number, traced and merged into the patient's real record the next day.
    temporary = f"T{pl.person.index:09d}"
    visit = pl.new_id("V")
    pl.send(
        Adt("A01", hospital, at, "I", "RESUS", visit, "E", admit_time=at, temporary_id=temporary)
    )
    merged = at + pl.hours(6, 30)
    pl.send(Merge(hospital, merged, temporary))
    out = merged + pl.days(0.5, 4)
    pl.send(
        Adt(
            "A03",
            hospital,
            out,
            "I",
            "AMU",
            visit,
            "E",
            admit_time=at,
            discharge_time=out,
            discharge_destination="19",
        )
    )


def _with_noise(pl: _Planner, kind: str, start: datetime) -> Journey:
    rng, person = pl.rng, pl.person
    specs = sorted(pl.specs, key=lambda spec: spec.time)
    moved_at: datetime | None = None
    updaters = sorted(
        {
            s.provider.code: s.provider for s in specs if s.provider.kind in ("hospital", "gp")
        }.items()
    )
    if updaters and rng.random() < 0.25:
        provider = rng.choice(updaters)[1]
        moved_at = specs[0].time + (specs[-1].time - specs[0].time) * rng.uniform(0.1, 1.0)
        specs.append(Adt("A08", provider, moved_at, "N"))
        specs.sort(key=lambda spec: spec.time)
    identities: dict[str, hl7.Identity] = {}
    others = sorted({s.provider.code for s in specs} - {person.practice.code})
    if others and rng.random() < IDENTITY_ISSUE_RATE:
        code = rng.choice(others)
        if rng.random() < 0.5:
            identities[code] = hl7.Identity(None, hl7.TRACE_REQUIRED)
        else:
            identities[code] = hl7.Identity(nhs.corrupt(person.nhs_number, rng), hl7.NOT_TRACED)
    steps: list[Step] = []
    seq = 0
    for spec in specs:
        seq += 1
        stamped = (spec.time + timedelta(seconds=rng.randint(5, 240))).astimezone(UTC)
        if rng.random() < MALFORMED_RATE:
            broken = rng.choice(hl7.MALFORMED)
            steps.append(Step(stamped, stamped, spec, seq, malformed=broken))
            seq += 1
            stamped += timedelta(minutes=rng.randint(5, 40))
        steps.append(Step(stamped, stamped, spec, seq))
        if rng.random() < DUPLICATE_RATE:
            resent = stamped + timedelta(minutes=rng.randint(1, 20))
            steps.append(Step(resent, stamped, spec, seq, duplicate=True))
    steps.sort(key=lambda step: (step.sent, step.seq))
    return Journey(person, kind, start, steps, identities, moved_at)
