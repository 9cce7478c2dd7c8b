"""REF^I12: a referral from the sending provider (MSH-4) to the receiving one (MSH-6)."""

from __future__ import annotations

from connectors.hl7 import Message
from connectors.translate.common import Context, Draft, optional_time, require_segment, value

REFERRAL = "carebus.events.Referral"


def referral(message: Message, ctx: Context) -> list[Draft]:
    """One ``Referral`` from RF1 (all fields null when there is no RF1)."""
    pid = require_segment(message, "PID", ctx)
    rf1 = message.first("RF1")
    fields = {
        "referral_id": value(rf1, 6),
        "status": value(rf1, 1),
        "priority": value(rf1, 2),
        "referral_type": value(rf1, 3),
        "referrer": ctx.sending_facility,
        "referred_to": value(message.msh, 6),
        "effective_time": optional_time(rf1, 7),
        "reason": value(rf1, 10, 2) or value(rf1, 10, 1),
    }
    return [Draft(REFERRAL, pid, fields, message.first("PD1"))]
