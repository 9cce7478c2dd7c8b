"""faster-diagnosis-at-risk: the 28-day Faster Diagnosis Standard is at risk.

Same pathway; when no ``MDM^T02`` (any provider) whose ``TXA-2.1`` is in
``suspected_cancer.outcome_document_types`` has arrived within 21 days of the
referral, H is told, at referral + 21 days. The outcome document closes the
pathway, so an open pathway at the deadline means no outcome yet.
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.deadlines import DAY, Deadline
from streams.observe import PATHWAY
from streams.region import Region
from streams.rules.base import Rule, episode_key
from streams.state import PatientState

ID: Final = "faster-diagnosis-at-risk"
DELAY: Final = 21 * DAY


def fire(deadline: Deadline, state: PatientState, region: Region) -> list[Alert]:
    """Alert H while the pathway is still open (no outcome document, no death)."""
    pathway = state.pathways.get(deadline.ref)
    if pathway is None:
        return []
    return [
        Alert.create(
            rule=ID,
            patient=state.key,
            raised_at=deadline.due,
            recipients=[pathway.hospital],
            fallback=pathway.referrer,
            dedup_key=episode_key(ID, state, pathway.referrer, pathway.control_id),
            evidence=[pathway.control_id],
            summary="No diagnosis outcome 21 days after a suspected-cancer referral",
        )
    ]


RULE: Final = Rule(id=ID, episode=PATHWAY, delay=DELAY, on_deadline=fire)
