"""eol-admission: a hospital admits a patient on the end-of-life register.

An ``ADT^A01`` from a ``hospital`` while the patient is on the EOL register: the
hospital and the care team's ``gp``, ``hospice`` and ``community`` providers are
told, at the event time.
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.region import Region
from streams.rules.base import COMMUNITY_KINDS, Rule, care_team, message_alert, of_kinds
from streams.state import PatientState
from streams.view import ENCOUNTER, EventView

ID: Final = "eol-admission"


def check(view: EventView, state: PatientState, region: Region) -> list[Alert]:
    """Alert the hospital and community care team of an end-of-life admission."""
    if not state.eol or view.trigger != "A01" or region.kind(view.sender) != "hospital":
        return []
    team = of_kinds(care_team(state, view), region, COMMUNITY_KINDS)
    return [
        message_alert(
            ID,
            state,
            view,
            recipients=(view.sender, *team),
            summary="Patient on the end-of-life register admitted to hospital",
        )
    ]


RULE: Final = Rule(
    id=ID, schemas=frozenset({ENCOUNTER}), triggers=frozenset({"A01"}), on_event=check
)
