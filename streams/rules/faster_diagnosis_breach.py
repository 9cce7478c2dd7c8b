"""faster-diagnosis-breach: the 28-day Faster Diagnosis Standard was missed.

Same as faster-diagnosis-at-risk at 28 days, to H and the referrer.
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.deadlines import DAY, Deadline
from streams.observe import PATHWAY
from streams.region import Region
from streams.rules.base import Rule, episode_key
from streams.state import PatientState

ID: Final = "faster-diagnosis-breach"
DELAY: Final = 28 * DAY


def fire(deadline: Deadline, state: PatientState, region: Region) -> list[Alert]:
    """Alert H and the referrer while the pathway is still open."""
    pathway = state.pathways.get(deadline.ref)
    if pathway is None:
        return []
    return [
        Alert.create(
            rule=ID,
            patient=state.key,
            raised_at=deadline.due,
            recipients=[pathway.hospital, pathway.referrer],
            fallback=pathway.referrer,
            dedup_key=episode_key(ID, state, pathway.referrer, pathway.control_id),
            evidence=[pathway.control_id],
            summary="No diagnosis outcome 28 days after a suspected-cancer referral",
        )
    ]


RULE: Final = Rule(id=ID, episode=PATHWAY, delay=DELAY, on_deadline=fire)
