"""SIU: appointments booked (S12), rescheduled (S13), modified (S14), cancelled (S15),
deleted (S17) and missed (S26)."""

from __future__ import annotations

from carebus.errors import MissingRequiredField
from connectors.hl7 import Layout, Message
from connectors.translate.common import (
    Context,
    Draft,
    as_time,
    optional_time,
    require_segment,
)

APPOINTMENT = "carebus.events.Appointment"

ACTIONS = {
    "S12": "BOOKED",
    "S13": "RESCHEDULED",
    "S14": "MODIFIED",
    "S15": "CANCELLED",
    "S17": "DELETED",
    "S26": "NO_SHOW",
}

#: SCH-1 (placer appointment id), 2 (filler appointment id), 8 (appointment type), 9
#: and 10 (duration and its unit), 25 (filler status).
SCH = Layout((1, 2, 8, 9, 10, 25), null_as_empty=True)
#: AIS-3 (service), 4 (start time), 7 and 8 (duration and its unit).
AIS = Layout((3, 4, 7, 8), null_as_empty=True)

#: Duration units (upper-cased CE.1 or text) to minutes per unit.
_MINUTES_PER_UNIT = {
    "MIN": 1.0,
    "MINS": 1.0,
    "MINUTE": 1.0,
    "MINUTES": 1.0,
    "M": 1.0,
    "H": 60.0,
    "HR": 60.0,
    "HRS": 60.0,
    "HOUR": 60.0,
    "HOURS": 60.0,
    "S": 1 / 60,
    "SEC": 1 / 60,
    "SECONDS": 1 / 60,
    "D": 1440.0,
    "DAY": 1440.0,
    "DAYS": 1440.0,
}


def appointment(message: Message, ctx: Context) -> list[Draft]:
    """One ``Appointment`` from SCH and the first AIS."""
    sch = require_segment(message, "SCH", ctx)
    pid = require_segment(message, "PID", ctx)
    placer_id, filler_id, appointment_type, duration, duration_unit, filler_status = sch.read(SCH)
    if not filler_id:
        raise MissingRequiredField(
            "SCH-2 (filler appointment id) is empty", control_id=ctx.control_id, field="SCH-2"
        )
    service, start, ais_duration, ais_duration_unit = message.read("AIS", AIS)
    fields = {
        "action": ACTIONS[ctx.trigger_event],
        "filler_appointment_id": filler_id,
        "placer_appointment_id": placer_id or None,
        "start_time": as_time(start)
        or optional_time(sch, 11, 4)
        or optional_time(message.first("TQ1"), 7),
        "duration_minutes": _minutes(ais_duration, ais_duration_unit)
        or _minutes(duration, duration_unit),
        "appointment_type": appointment_type or None,
        "service": service or None,
        "filler_status": filler_status or None,
    }
    return [Draft(APPOINTMENT, pid, fields, message.first("PD1"))]


def _minutes(amount: str, unit: str) -> int | None:
    """A duration (amount and unit texts) in whole minutes; None when absent or unusable."""
    if not amount:
        return None
    per_unit = _MINUTES_PER_UNIT.get((unit or "MIN").upper())
    try:
        number = float(amount)
    except ValueError:
        return None
    if per_unit is None or not 0 <= number * per_unit < 2**31:
        return None
    return int(number * per_unit)
