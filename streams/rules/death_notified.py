"""death-notified: the first message that shows the patient dead.

Every care-team provider except the sender is told (the sender when there is no
one else), at the event time of that message.
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.region import Region
from streams.rules.base import Rule, care_team, message_alert
from streams.state import PatientState
from streams.view import DIED, EventView

ID: Final = "death-notified"


def check(view: EventView, state: PatientState, region: Region) -> list[Alert]:
    """Tell the rest of the care team the patient has died."""
    if state.death is not None:
        return []
    team = care_team(state, view)
    team.discard(view.sender)
    return [message_alert(ID, state, view, recipients=team, summary="Patient has died")]


RULE: Final = Rule(id=ID, schemas=frozenset({DIED}), on_event=check)
