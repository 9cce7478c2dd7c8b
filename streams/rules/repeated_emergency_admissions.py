"""repeated-emergency-admissions: a third emergency admission within 90 days.

An ``ADT^A01`` with ``PV1-4.1`` in ``emergency_admission_types`` that is the third or
later such admission (from any provider) in the 90 days up to and including it,
for a patient on the EOL register or with an open suspected-cancer pathway. Raised
for each such admission, to the care team's ``gp`` providers (the sender when
there are none), at the event time.

By event time: an admission stamped after this one is not among its previous
admissions, whenever it arrived; the admissions kept (:mod:`streams.observe`) reach
back far enough for one that arrives up to ``streams.state.LATE`` behind later ones.
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.observe import EMERGENCY_WINDOW
from streams.region import Region
from streams.rules.base import Rule, care_team, message_alert, of_kinds
from streams.state import PatientState
from streams.view import ENCOUNTER, EventView

ID: Final = "repeated-emergency-admissions"
GP: Final = frozenset({"gp"})


def check(view: EventView, state: PatientState, region: Region) -> list[Alert]:
    """Alert the GPs of a vulnerable patient admitted as an emergency again."""
    if view.trigger != "A01" or not (state.eol or state.pathways):
        return []
    if view.record.get("admission_type") not in region.emergency_admission_types:
        return []
    since = view.time - EMERGENCY_WINDOW
    earlier = sorted(
        (at, control_id)
        for ref, (at, control_id) in state.emergencies.items()
        if ref != view.ref and since <= at <= view.time
    )
    if len(earlier) < 2:
        return []
    return [
        message_alert(
            ID,
            state,
            view,
            recipients=of_kinds(care_team(state, view), region, GP),
            evidence=[c for _, c in earlier],
            summary=f"Emergency admission number {len(earlier) + 1} within 90 days",
        )
    ]


RULE: Final = Rule(
    id=ID, schemas=frozenset({ENCOUNTER}), triggers=frozenset({"A01"}), on_event=check
)
