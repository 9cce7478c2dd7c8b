"""PPR^PC1, PC2, PC3: problems added, updated or deleted (PRB)."""

from __future__ import annotations

from typing import Any

from connectors.hl7 import Layout, Message, Segment
from connectors.translate.common import (
    Context,
    Draft,
    as_time,
    require_segment,
)

PROBLEM = "carebus.events.Problem"

ACTIONS = {"PC1": "ADDED", "PC2": "UPDATED", "PC3": "DELETED"}

#: PRB-1 (action code), 2 (action time), 4 (instance id), then PRB-3.1 to 3.3 (code,
#: text, coding system).
PRB = Layout((1, 2, 4), ((3, 3),), null_as_empty=True)


def problem(message: Message, ctx: Context) -> list[Draft]:
    """One ``Problem`` listing every PRB segment."""
    pid = require_segment(message, "PID", ctx)
    require_segment(message, "PRB", ctx)
    fields = {
        "action": ACTIONS[ctx.trigger_event],
        "problems": [_problem(prb) for prb in message.all("PRB")],
    }
    return [Draft(PROBLEM, pid, fields, message.first("PD1"))]


def _problem(prb: Segment) -> dict[str, Any]:
    action_code, action_time, instance_id, code, text, coding_system = prb.read(PRB)
    return {
        "action_code": action_code or None,
        "action_time": as_time(action_time),
        "instance_id": instance_id or None,
        "code": code or None,
        "text": text or None,
        "coding_system": coding_system or None,
    }
