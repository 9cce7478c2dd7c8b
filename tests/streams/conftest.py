"""Fixtures for the rule engine tests: a small region and an engine over it."""

from __future__ import annotations

import pytest

from streams.engine import Engine
from streams.region import Region, parse_region

REGION = {
    "providers": {
        "RX1": {"name": "Example General Hospital", "kind": "hospital"},
        "RX2": {"name": "Other Hospital", "kind": "hospital"},
        "G0001": {"name": "Example Surgery", "kind": "gp"},
        "G0002": {"name": "Other Surgery", "kind": "gp"},
        "HSP01": {"name": "Example Hospice", "kind": "hospice"},
        "CM01": {"name": "Community Nursing", "kind": "community"},
        "CC01": {"name": "County Council", "kind": "council"},
    },
    "retest_intervals_days": {"4548-4": 90, "2345-7": 1},
}


@pytest.fixture
def region() -> Region:
    """The test region: two hospitals, two GPs, a hospice, community and council."""
    return parse_region(REGION)


@pytest.fixture
def engine(region: Region) -> Engine:
    """An engine with all fourteen rules over the test region."""
    return Engine(region)
