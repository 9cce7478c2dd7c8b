"""The regional feed: every patient's journey, interleaved in the order sent.

Patients arrive one after another (a Poisson process); each arrival's whole
journey is planned from its own random stream and joins a heap keyed by the time
of its next message. A patient is admitted only when the heap's earliest message
is later than the arrival, so the feed comes out in time order while holding only
the journeys in progress: memory depends on the arrival rate, not on the length
of the feed, which can run to millions of messages.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from carebus.synth.journeys import Journey, SynthMessage, plan_journey
from carebus.synth.people import make_person
from carebus.synth.region import REGION, SyntheticRegion

#: Patients whose journey starts each day, on average.
DEFAULT_ARRIVALS_PER_DAY = 60.0

_Entry = tuple[datetime, int, int, SynthMessage, Iterator[SynthMessage]]


def journeys(
    seed: int,
    start: datetime,
    *,
    patients: int | None = None,
    arrivals_per_day: float = DEFAULT_ARRIVALS_PER_DAY,
    region: SyntheticRegion = REGION,
) -> Iterator[Journey]:
    """Plan the journeys of ``patients`` patients (endless when ``None``), in order of arrival.

    Patient ``i`` depends only on ``seed`` and ``i``; arrival times only on ``seed``.
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if arrivals_per_day <= 0:
        raise ValueError("arrivals_per_day must be positive")
    arrivals = random.Random(f"carebus-synth:{seed}:arrivals")
    at = start
    indexes = itertools.count() if patients is None else iter(range(patients))
    for index in indexes:
        rng = random.Random(f"carebus-synth:{seed}:patient:{index}")
        person = make_person(index, rng, region, at.date())
        yield plan_journey(person, rng, region, at)
        at += timedelta(days=arrivals.expovariate(arrivals_per_day))


def messages(
    seed: int,
    start: datetime,
    *,
    patients: int | None = None,
    arrivals_per_day: float = DEFAULT_ARRIVALS_PER_DAY,
    region: SyntheticRegion = REGION,
) -> Iterator[SynthMessage]:
    """Every message of the region's feed, in the order sent (ties by patient, then step)."""
    return merge(
        journeys(seed, start, patients=patients, arrivals_per_day=arrivals_per_day, region=region)
    )


def merge(arrivals: Iterable[Journey]) -> Iterator[SynthMessage]:
    """The messages of journeys, in the order sent.

    ``arrivals`` must come in order of :attr:`Journey.start`, and every message of a
    journey must be sent at or after its start. A journey is taken from
    ``arrivals`` only when its start is due, and dropped when its last message
    has gone, so only the journeys in progress are held.
    """
    pending = iter(arrivals)
    heap: list[_Entry] = []
    upcoming = next(pending, None)
    position = itertools.count()
    while True:
        # Every message of a journey is sent at or after its patient's arrival, and
        # patients arrive in order: once the next arrival is later than the heap's
        # earliest message, nothing still to come can be earlier than it.
        while upcoming is not None and (not heap or upcoming.start <= heap[0][0]):
            _push(heap, upcoming.person.index, iter(upcoming), position)
            upcoming = next(pending, None)
        if not heap:
            return
        _, index, _, message, rest = heapq.heappop(heap)
        yield message
        _push(heap, index, rest, position)


def generate(
    seed: int,
    start: datetime,
    *,
    patients: int | None = None,
    messages_limit: int | None = None,
    arrivals_per_day: float = DEFAULT_ARRIVALS_PER_DAY,
) -> Iterator[tuple[datetime, bytes]]:
    """``(time sent, HL7 bytes)`` of the feed: ``patients`` journeys, cut at ``messages_limit``."""
    feed = messages(seed, start, patients=patients, arrivals_per_day=arrivals_per_day)
    if messages_limit is not None:
        feed = itertools.islice(feed, messages_limit)
    for message in feed:
        yield message.time, message.raw


def _push(
    heap: list[_Entry], index: int, rest: Iterator[SynthMessage], position: Iterator[int]
) -> None:
    following = next(rest, None)
    if following is not None:
        heapq.heappush(heap, (following.time, index, next(position), following, rest))
