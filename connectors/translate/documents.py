"""MDM^T01-T11: clinical documents notified, changed or replaced (TXA)."""

from __future__ import annotations

from connectors.hl7 import Message
from connectors.translate.common import Context, Draft, as_time, require_segment, texts

DOCUMENT = "carebus.events.Document"


def document(message: Message, ctx: Context) -> list[Draft]:
    """One ``Document`` from TXA."""
    pid = require_segment(message, "PID", ctx)
    txa = require_segment(message, "TXA", ctx)
    document_type, activity, document_id, completion = texts(txa, 2, 4, 12, 17)
    fields = {
        "document_type": document_type or None,
        "document_id": document_id or None,
        "completion_status": completion or None,
        "activity_time": as_time(activity),
    }
    return [Draft(DOCUMENT, pid, fields, message.first("PD1"))]
