"""faster-diagnosis-breach: the 28-day Faster Diagnosis Standard was missed.

Same as faster-diagnosis-at-risk at 28 days, to H and the referrer.
"""

from __future__ import annotations

from typing import Final

from streams.deadlines import DAY
from streams.rules.base import pathway_clock

ID: Final = "faster-diagnosis-breach"
DELAY: Final = 28 * DAY

RULE: Final = pathway_clock(
    ID,
    delay=DELAY,
    met=None,  # only the outcome document (closing the pathway) meets it
    tell_referrer=True,
    summary="No diagnosis outcome 28 days after a suspected-cancer referral",
)
