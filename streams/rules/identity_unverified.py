"""identity-unverified: a message whose patient has no valid NHS number.

Raised once per sending provider and local identifier (the patient key the
message carried), to the sending provider, at the event time.
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.region import Region
from streams.rules.base import Rule, message_alert
from streams.state import PatientState
from streams.view import SCHEMAS, EventView

ID: Final = "identity-unverified"


def check(view: EventView, state: PatientState, region: Region) -> list[Alert]:
    """Alert the sender when the message has no NHS number passing modulus 11."""
    if view.nhs_number:
        return []
    key = f"{ID}:{view.patient_key}:{view.sender}"
    if key in state.raised:
        return []
    return [
        message_alert(
            ID,
            state,
            view,
            recipients=(view.sender,),
            key=key,
            summary="Message without a valid NHS number: verify the patient's identity",
        )
    ]


RULE: Final = Rule(id=ID, schemas=SCHEMAS, on_event=check)
