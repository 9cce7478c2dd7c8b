"""death-pending-appointments: a provider holds appointments after the patient's death.

When the patient is first shown dead, each provider holding booked appointments
(``SIU^S12``, not cancelled by ``SIU^S15``/``S17`` with the same filler id) that
start after the time of death gets one alert, at the event time of the death
message.
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.deadlines import to_micros
from streams.region import Region
from streams.rules.base import Rule, message_alert, message_key
from streams.state import PatientState
from streams.view import DIED, EventView

ID: Final = "death-pending-appointments"


def check(view: EventView, state: PatientState, region: Region) -> list[Alert]:
    """One alert per provider holding appointments after the time of death."""
    if state.death is not None or not state.appointments:
        return []
    died = view.record.get("death_time")
    death_time = view.time if died is None else to_micros(died)
    held: dict[str, list[str]] = {}
    for appointment in state.appointments.values():
        if appointment.start > death_time:
            held.setdefault(appointment.provider, []).append(appointment.control_id)
    return [
        message_alert(
            ID,
            state,
            view,
            recipients=(provider,),
            key=message_key(ID, state, view, provider),
            evidence=sorted(bookings),
            summary=f"Patient has died; {len(bookings)} appointment(s) still booked",
        )
        for provider, bookings in sorted(held.items())
    ]


RULE: Final = Rule(id=ID, schemas=frozenset({DIED}), on_event=check)
