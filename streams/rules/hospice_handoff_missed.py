"""hospice-handoff-missed: discharged to a hospice, but no hospice admission followed.

An ``ADT^A03`` from a ``hospital`` with ``PV1-37.1`` in
``hospice_discharge_destinations`` opens a discharge; an ``ADT^A01`` from any
``hospice`` within 24 hours of it (inclusive) closes it. Still open at discharge
+ 24 hours: the discharging hospital and the care team's ``hospice`` providers
are told. Death closes the discharge too.
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.deadlines import HOUR, Deadline
from streams.observe import DISCHARGE
from streams.region import Region
from streams.rules.base import Rule, episode_key, of_kinds
from streams.state import PatientState

ID: Final = "hospice-handoff-missed"
DELAY: Final = 24 * HOUR
HOSPICE: Final = frozenset({"hospice"})


def fire(deadline: Deadline, state: PatientState, region: Region) -> list[Alert]:
    """Alert the hospital and the care team's hospices when no admission arrived."""
    discharge = state.discharges.get(deadline.ref)
    if discharge is None:
        return []
    hospices = of_kinds(state.care_team(deadline.due), region, HOSPICE)
    return [
        Alert.create(
            rule=ID,
            patient=state.key,
            raised_at=deadline.due,
            recipients=[discharge.hospital, *hospices],
            fallback=discharge.hospital,
            dedup_key=episode_key(ID, state, discharge.hospital, discharge.control_id),
            evidence=[discharge.control_id],
            summary="Discharged to hospice 24 h ago; no hospice admission received",
        )
    ]


RULE: Final = Rule(id=ID, episode=DISCHARGE, delay=DELAY, on_deadline=fire)
