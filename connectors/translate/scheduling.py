"""SIU: appointments booked (S12), rescheduled (S13), modified (S14), cancelled (S15),
deleted (S17) and missed (S26)."""

from __future__ import annotations

from carebus.errors import MissingRequiredField
from connectors.hl7 import Message, Segment
from connectors.translate.common import Context, Draft, optional_time, require_segment, value

APPOINTMENT = "carebus.events.Appointment"

ACTIONS = {
    "S12": "BOOKED",
    "S13": "RESCHEDULED",
    "S14": "MODIFIED",
    "S15": "CANCELLED",
    "S17": "DELETED",
    "S26": "NO_SHOW",
}

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
    filler_id = value(sch, 2)
    if filler_id is None:
        raise MissingRequiredField(
            "SCH-2 (filler appointment id) is empty", control_id=ctx.control_id, field="SCH-2"
        )
    ais = message.first("AIS")
    fields = {
        "action": ACTIONS[ctx.trigger_event],
        "filler_appointment_id": filler_id,
        "placer_appointment_id": value(sch, 1),
        "start_time": optional_time(ais, 4)
        or optional_time(sch, 11, 4)
        or optional_time(message.first("TQ1"), 7),
        "duration_minutes": _minutes(ais, 7, 8) or _minutes(sch, 9, 10),
        "appointment_type": value(sch, 8),
        "service": value(ais, 3),
        "filler_status": value(sch, 25),
    }
    return [Draft(APPOINTMENT, pid, fields, message.first("PD1"))]


def _minutes(segment: Segment | None, amount_field: int, unit_field: int) -> int | None:
    amount = value(segment, amount_field)
    if amount is None:
        return None
    unit = (value(segment, unit_field) or "MIN").upper()
    per_unit = _MINUTES_PER_UNIT.get(unit)
    try:
        number = float(amount)
    except ValueError:
        return None
    if per_unit is None or not 0 <= number * per_unit < 2**31:
        return None
    return int(number * per_unit)
