"""PPR^PC1, PC2, PC3: problems added, updated or deleted (PRB)."""

from __future__ import annotations

from typing import Any

from connectors.hl7 import Message, Segment
from connectors.translate.common import (
    Context,
    Draft,
    as_time,
    component_texts,
    require_segment,
    texts,
)

PROBLEM = "carebus.events.Problem"

ACTIONS = {"PC1": "ADDED", "PC2": "UPDATED", "PC3": "DELETED"}


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
    action_code, action_time, instance_id = texts(prb, 1, 2, 4)
    code, text, coding_system = component_texts(prb, 3, 3)
    return {
        "action_code": action_code or None,
        "action_time": as_time(action_time),
        "instance_id": instance_id or None,
        "code": code or None,
        "text": text or None,
        "coding_system": coding_system or None,
    }
