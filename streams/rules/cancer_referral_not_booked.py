"""cancer-referral-not-booked: no booking within 7 days of a suspected-cancer referral.

A ``REF^I12`` whose ``RF1-2.1`` is in ``suspected_cancer.priorities`` starts a pathway
at the provider it is sent to (H, ``MSH-6.1``). When no ``SIU^S12`` from H arrives
within 7 days of the referral, H and the referrer are told, at referral + 7 days.
A pathway closed by its outcome document or by death raises nothing.
"""

from __future__ import annotations

from typing import Final

from streams.deadlines import DAY
from streams.rules.base import pathway_clock
from streams.state import Pathway

ID: Final = "cancer-referral-not-booked"
DELAY: Final = 7 * DAY


def booked(pathway: Pathway) -> bool:
    """Met: an ``SIU^S12`` from H arrived within the window."""
    return pathway.booked


RULE: Final = pathway_clock(
    ID,
    delay=DELAY,
    met=booked,
    tell_referrer=True,
    summary="Suspected-cancer referral not booked within 7 days",
)
