"""cancer-referral-not-booked: no booking within 7 days of a suspected-cancer referral.

A ``REF^I12`` whose ``RF1-2.1`` is in ``suspected_cancer.priorities`` starts a pathway
at the provider it is sent to (H, ``MSH-6.1``). When no ``SIU^S12`` from H arrives
within 7 days of the referral, H and the referrer are told, at referral + 7 days.
A pathway closed by its outcome document or by death raises nothing.
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.deadlines import DAY, Deadline
from streams.observe import PATHWAY
from streams.region import Region
from streams.rules.base import Rule, episode_key
from streams.state import PatientState

ID: Final = "cancer-referral-not-booked"
DELAY: Final = 7 * DAY


def fire(deadline: Deadline, state: PatientState, region: Region) -> list[Alert]:
    """Alert H and the referrer when the open pathway has no booking from H."""
    pathway = state.pathways.get(deadline.ref)
    if pathway is None or pathway.booked:
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
            summary="Suspected-cancer referral not booked within 7 days",
        )
    ]


RULE: Final = Rule(id=ID, episode=PATHWAY, delay=DELAY, on_deadline=fire)
