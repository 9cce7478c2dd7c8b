"""activity-after-death: new activity for a patient already shown dead.

An ``SIU^S12``, a new order (``ORM^O01``/``OML^O21`` with ``ORC-1`` = ``NW``) or a
``REF^I12`` whose event time is after the time of death: the sending provider is
told, at the event time.
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.region import Region
from streams.rules.base import Rule, message_alert
from streams.state import PatientState
from streams.view import APPOINTMENT, ORDER, REFERRAL, EventView

ID: Final = "activity-after-death"


def check(view: EventView, state: PatientState, region: Region) -> list[Alert]:
    """Alert the sender of a booking, new order or referral after death."""
    death = state.death
    if death is None or view.time <= death.time or not _is_new_activity(view):
        return []
    return [
        message_alert(
            ID,
            state,
            view,
            recipients=(view.sender,),
            evidence=(death.control_id,),
            summary="Booking, order or referral for a patient recorded as dead",
        )
    ]


def _is_new_activity(view: EventView) -> bool:
    if view.schema == APPOINTMENT:
        return view.trigger == "S12"
    if view.schema == ORDER:
        return any(i.get("order_control") == "NW" for i in view.record.get("items") or ())
    return view.schema == REFERRAL


RULE: Final = Rule(
    id=ID,
    schemas=frozenset({APPOINTMENT, ORDER, REFERRAL}),
    triggers=frozenset({"S12", "O01", "O21", "I12"}),
    on_event=check,
)
