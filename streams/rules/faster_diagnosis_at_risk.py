"""faster-diagnosis-at-risk: the 28-day Faster Diagnosis Standard is at risk.

Same pathway; when no ``MDM^T02`` (any provider) whose ``TXA-2.1`` is in
``suspected_cancer.outcome_document_types`` has arrived within 21 days of the
referral, H is told, at referral + 21 days. The outcome document closes the
pathway, so an open pathway at the deadline means no outcome yet.
"""

from __future__ import annotations

from typing import Final

from streams.deadlines import DAY
from streams.rules.base import pathway_clock

ID: Final = "faster-diagnosis-at-risk"
DELAY: Final = 21 * DAY

RULE: Final = pathway_clock(
    ID,
    delay=DELAY,
    met=None,  # only the outcome document (closing the pathway) meets it
    tell_referrer=False,
    summary="No diagnosis outcome 21 days after a suspected-cancer referral",
)
