"""A small synthetic feed shared by the synth tests (generated once per session)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carebus.synth import Journey, SynthMessage, journeys, merge

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
SEED = 7
PATIENTS = 300


@pytest.fixture(scope="session")
def planned() -> list[Journey]:
    """The journeys of 300 patients."""
    return list(journeys(SEED, START, patients=PATIENTS))


@pytest.fixture(scope="session")
def feed(planned: list[Journey]) -> list[SynthMessage]:
    """Every message of those journeys, in the order sent."""
    return list(merge(planned))
