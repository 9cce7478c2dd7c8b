"""cancer-referral-not-seen: no attendance within 14 days of a suspected-cancer referral.

Same pathway as cancer-referral-not-booked; when no ``ADT^A01`` or ``ADT^A04`` from H
arrives within 14 days of the referral, H and the referrer are told, at
referral + 14 days.
"""

from __future__ import annotations

from typing import Final

from streams.deadlines import DAY
from streams.rules.base import pathway_clock
from streams.state import Pathway

ID: Final = "cancer-referral-not-seen"
DELAY: Final = 14 * DAY


def seen(pathway: Pathway) -> bool:
    """Met: an ``ADT^A01`` or ``ADT^A04`` from H arrived within the window."""
    return pathway.seen


RULE: Final = pathway_clock(
    ID,
    delay=DELAY,
    met=seen,
    tell_referrer=True,
    summary="Suspected-cancer referral not seen within 14 days",
)
