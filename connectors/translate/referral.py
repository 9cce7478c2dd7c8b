"""REF^I12: a referral from the sending provider (MSH-4) to the receiving one (MSH-6)."""

from __future__ import annotations

from connectors.hl7 import Layout, Message
from connectors.translate.common import (
    Context,
    Draft,
    as_time,
    require_segment,
    value,
)

REFERRAL = "carebus.events.Referral"

#: RF1-1 (status), 2 (priority), 3 (type), 6 (referral id), 7 (effective time), then
#: RF1-10.1 and 10.2 (reason code and text).
RF1 = Layout((1, 2, 3, 6, 7), ((10, 2),), null_as_empty=True)


def referral(message: Message, ctx: Context) -> list[Draft]:
    """One ``Referral`` from RF1 (all fields null when there is no RF1)."""
    pid = require_segment(message, "PID", ctx)
    status, priority, referral_type, referral_id, effective, reason_code, reason_text = (
        message.read("RF1", RF1)
    )
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
