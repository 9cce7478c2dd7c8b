"""MDM^T01-T11: clinical documents notified, changed or replaced (TXA)."""

from __future__ import annotations

from connectors.hl7 import Message
from connectors.translate.common import Context, Draft, optional_time, require_segment, value

DOCUMENT = "carebus.events.Document"


def document(message: Message, ctx: Context) -> list[Draft]:
    """One ``Document`` from TXA."""
    pid = require_segment(message, "PID", ctx)
    txa = require_segment(message, "TXA", ctx)
    fields = {
        "document_type": value(txa, 2),
        "document_id": value(txa, 12),
        "completion_status": value(txa, 17),
        "activity_time": optional_time(txa, 4),
    }
    return [Draft(DOCUMENT, pid, fields, message.first("PD1"))]
