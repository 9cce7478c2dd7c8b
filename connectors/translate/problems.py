"""PPR^PC1, PC2, PC3: problems added, updated or deleted (PRB)."""

from __future__ import annotations

from connectors.hl7 import Message
from connectors.translate.common import Context, Draft, optional_time, require_segment, value

PROBLEM = "carebus.events.Problem"

ACTIONS = {"PC1": "ADDED", "PC2": "UPDATED", "PC3": "DELETED"}


def problem(message: Message, ctx: Context) -> list[Draft]:
    """One ``Problem`` listing every PRB segment."""
    pid = require_segment(message, "PID", ctx)
    require_segment(message, "PRB", ctx)
    problems = [
        {
            "action_code": value(prb, 1),
            "action_time": optional_time(prb, 2),
            "instance_id": value(prb, 4),
            "code": value(prb, 3, 1),
            "text": value(prb, 3, 2),
            "coding_system": value(prb, 3, 3),
        }
        for prb in message.all("PRB")
    ]
    fields = {"action": ACTIONS[ctx.trigger_event], "problems": problems}
    return [Draft(PROBLEM, pid, fields, message.first("PD1"))]
