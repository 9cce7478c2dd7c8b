"""Look-back windows by event time, whatever the arrival order (rules spec 1.1, Clock).

A message that arrives earlier but carries a later event time is not in the window
before an earlier event. So one patient's messages applied in event-time order, and
the same messages with some of them arriving early, give the same alerts, as long
as what arrives early reads no history itself (a booking, a result, a demographics
update), no deadline falls due between where it arrives and its own event time
(otherwise the clock passes the messages it jumped, and the spec fires that
deadline first by design), and it is early by at most ``LATE`` (history older than
that is forgotten, see streams/state.py).
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.alert import Alert
from streams.deadlines import DAY, to_micros
from streams.engine import Engine
from streams.region import parse_region
from streams.state import LATE
from streams.view import StreamEvent
from tests.streams.conftest import REGION
from tests.streams.events import Feed, london, replay

START = london("2025-06-02 09:00")

HOSPITALS = ("RX1", "RX2")
PROVIDERS = ("RX1", "RX2", "G0001", "G0002", "HSP01", "CM01")
#: message kinds that read the patient's history (they keep their place in arrival)
READERS = ("A01", "A01E", "A04", "A05", "A28", "REF", "ORM", "A03", "A03HOSPICE", "PC1", "PC3")
#: message kinds that read no history: these may arrive early
MOVERS = ("S12", "ORU", "A08")
#: gaps between consecutive event times, in minutes: seconds apart to over a year
GAPS = st.one_of(
    st.integers(min_value=1, max_value=90),
    st.sampled_from([24 * 60, 24 * 60 - 1, 24 * 60 + 1, 30 * 24 * 60, 89 * 24 * 60]),
    st.integers(min_value=1, max_value=400 * 24 * 60),
)

ENGINE = Engine(parse_region(REGION))


def _build(feed: Feed, kind: str, sender: str, at: object, n: int) -> StreamEvent:
    """One message of ``kind`` from ``sender`` at ``at`` (the n-th of the story)."""
    when = london(at)  # type: ignore[arg-type]
    if kind in ("A01", "A04", "A05"):
        return feed.adt(kind, sender, when)
    if kind == "A01E":
        return feed.adt("A01", sender, when, admission_type="E")
    if kind == "A03":
        return feed.adt("A03", sender, when, discharge_destination="19")
    if kind == "A03HOSPICE":
        return feed.adt("A03", sender, when, discharge_destination="88", visit_number=f"V{n}")
    if kind in ("A28", "A08"):
        return feed.demographics(kind, sender, when)
    if kind == "REF":
        return feed.referral(sender, HOSPITALS[n % 2], when, priority="R", referral_id=f"R{n}")
    if kind == "ORM":
        return feed.order(sender, when)
    if kind == "ORU":
        return feed.result(sender, when, observed=when - timedelta(hours=n % 30))
    if kind == "S12":
        return feed.appointment("S12", sender, when, filler_id=f"F{n}", start=when + timedelta(3))
    return feed.problem(kind, "G0001", when)


@st.composite
def stories(draw: st.DrawFn) -> tuple[list[StreamEvent], list[int]]:
    """One patient's messages in event-time order, and an arrival order with early movers."""
    feed = Feed()
    count = draw(st.integers(min_value=2, max_value=14))
    at = START
    events: list[StreamEvent] = []
    kinds: list[str] = []
    for n in range(count):
        at += timedelta(minutes=draw(GAPS))
        kind = draw(st.sampled_from(READERS + MOVERS))
        sender = draw(st.sampled_from(HOSPITALS if kind.startswith("A03") else PROVIDERS))
        events.append(_build(feed, kind, sender, at, n))
        kinds.append(kind)
    times = [to_micros(e.record["header"]["event_time"]) for e in events]
    dues = [t + DAY for t, k in zip(times, kinds, strict=True) if k == "A03HOSPICE"]
    arrival = list(range(count))
    for i in range(count):
        if kinds[i] not in MOVERS:
            continue
        jump = draw(st.integers(min_value=0, max_value=count))
        pos = arrival.index(i)
        new = max(0, pos - jump)
        jumped = [x for x in arrival[new:pos] if times[x] < times[i]]
        # No deadline may fall due between the earliest jumped message and the mover, and
        # the mover may be early by at most LATE (older history is forgotten by then).
        earliest = min((times[x] for x in jumped), default=times[i])
        if times[i] - earliest > LATE or any(earliest <= d < times[i] for d in dues):
            continue
        arrival = [*arrival[:new], i, *arrival[new:pos], *arrival[pos + 1 :]]
    return events, arrival


def _alerts(events: list[StreamEvent]) -> list[Alert]:
    last = max(e.record["header"]["event_time"] for e in events)
    return replay(ENGINE, events, until=last + timedelta(days=2))


class TestArrivalOrder:
    @settings(max_examples=300, deadline=None)
    @given(stories())
    def test_early_arrivals_give_the_alerts_of_event_time_order(
        self, story: tuple[list[StreamEvent], list[int]]
    ) -> None:
        """Messages arriving before earlier-stamped ones change no alert of the patient."""
        events, arrival = story
        assert _alerts([events[i] for i in arrival]) == _alerts(events)


class TestBookingBeforeRegistration:
    def test_booking_sent_before_the_registration_it_follows_does_not_hide_it(
        self, engine: Engine
    ) -> None:
        """A provider's booking stamped seconds after its registration but arriving first
        does not make the provider known before the registration: repeated-history is raised."""
        feed = Feed()
        gp = feed.adt("A04", "G0001", "2026-02-16 15:33")
        registration = feed.adt("A04", "CM01", "2026-02-23 13:30")
        booking = feed.appointment(
            "S12", "CM01", london("2026-02-23 13:30") + timedelta(seconds=28), start="2026-03-01"
        )
        in_order = replay(engine, [gp, registration, booking])
        arrived = replay(engine, [gp, booking, registration])
        assert [(a.rule, a.recipients, a.evidence) for a in arrived] == [
            ("repeated-history", ("CM01",), (registration.record["header"]["control_id"],))
        ]
        assert arrived == in_order
