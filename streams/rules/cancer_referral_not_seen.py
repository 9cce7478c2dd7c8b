"""cancer-referral-not-seen: no attendance within 14 days of a suspected-cancer referral.

Same pathway as cancer-referral-not-booked; when no ``ADT^A01`` or ``ADT^A04`` from H
arrives within 14 days of the referral, H and the referrer are told, at
referral + 14 days.
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.deadlines import DAY, Deadline
from streams.observe import PATHWAY
from streams.region import Region
from streams.rules.base import Rule, episode_key
from streams.state import PatientState

ID: Final = "cancer-referral-not-seen"
DELAY: Final = 14 * DAY


def fire(deadline: Deadline, state: PatientState, region: Region) -> list[Alert]:
    """Alert H and the referrer when the open pathway has no admission or attendance at H."""
    pathway = state.pathways.get(deadline.ref)
    if pathway is None or pathway.seen:
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
            summary="Suspected-cancer referral not seen within 14 days",
        )
    ]


RULE: Final = Rule(id=ID, episode=PATHWAY, delay=DELAY, on_deadline=fire)
