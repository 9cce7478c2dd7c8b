"""MDM^T01-T11: clinical documents notified, changed or replaced (TXA)."""

from __future__ import annotations

from connectors.hl7 import Layout, Message
from connectors.translate.common import Context, Draft, as_time, require_segment

DOCUMENT = "carebus.events.Document"

#: TXA-2 (document type), 4 (activity time), 12 (document id), 17 (completion status).
TXA = Layout((2, 4, 12, 17), null_as_empty=True)


def document(message: Message, ctx: Context) -> list[Draft]:
    """One ``Document`` from TXA."""
    pid = require_segment(message, "PID", ctx)
    txa = require_segment(message, "TXA", ctx)
    document_type, activity, document_id, completion = txa.read(TXA)
    fields = {
        "document_type": document_type or None,
        "document_id": document_id or None,
        "completion_status": completion or None,
        "activity_time": as_time(activity),
    }
    return [Draft(DOCUMENT, pid, fields, message.first("PD1"))]
