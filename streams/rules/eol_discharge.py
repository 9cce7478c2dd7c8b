"""eol-discharge: a hospital discharges a patient on the end-of-life register.

An ``ADT^A03`` from a ``hospital`` while the patient is on the EOL register: the
care team's ``gp``, ``hospice`` and ``community`` providers are told (the sender
when there are none), at the event time.
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.region import Region
from streams.rules.base import COMMUNITY_KINDS, Rule, care_team, message_alert, of_kinds
from streams.state import PatientState
from streams.view import ENCOUNTER, EventView

ID: Final = "eol-discharge"


def check(view: EventView, state: PatientState, region: Region) -> list[Alert]:
    """Alert the community care team of an end-of-life discharge."""
    if not state.eol or view.trigger != "A03" or region.kind(view.sender) != "hospital":
        return []
    return [
        message_alert(
            ID,
            state,
            view,
            recipients=of_kinds(care_team(state, view), region, COMMUNITY_KINDS),
            summary="Patient on the end-of-life register discharged from hospital",
        )
    ]


RULE: Final = Rule(
    id=ID, schemas=frozenset({ENCOUNTER}), triggers=frozenset({"A03"}), on_event=check
)
