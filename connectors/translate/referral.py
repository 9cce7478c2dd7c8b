"""REF^I12: a referral from the sending provider (MSH-4) to the receiving one (MSH-6)."""

from __future__ import annotations

from connectors.hl7 import Message
from connectors.translate.common import (
    Context,
    Draft,
    as_time,
    component_texts,
    require_segment,
    texts,
    value,
)

REFERRAL = "carebus.events.Referral"


def referral(message: Message, ctx: Context) -> list[Draft]:
    """One ``Referral`` from RF1 (all fields null when there is no RF1)."""
    pid = require_segment(message, "PID", ctx)
    rf1 = message.first("RF1")
    status, priority, referral_type, referral_id, effective = texts(rf1, 1, 2, 3, 6, 7)
    reason_code, reason_text = component_texts(rf1, 10, 2)
    fields = {
        "referral_id": referral_id or None,
        "status": status or None,
        "priority": priority or None,
        "referral_type": referral_type or None,
        "referrer": ctx.sending_facility,
        "referred_to": value(message.msh, 6),
        "effective_time": as_time(effective),
        "reason": reason_text or reason_code or None,
    }
    return [Draft(REFERRAL, pid, fields, message.first("PD1"))]
