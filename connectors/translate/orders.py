"""ORM^O01 and OML^O21: tests ordered, changed or cancelled, one item per ORC/OBR."""

from __future__ import annotations

from typing import Any

from carebus.errors import MissingRequiredField
from connectors.hl7 import Message, Segment
from connectors.translate.common import Context, Draft, require_segment, value

ORDER = "carebus.events.Order"


def order(message: Message, ctx: Context) -> list[Draft]:
    """One ``Order`` whose items pair each ORC with the OBR that follows it."""
    pid = require_segment(message, "PID", ctx)
    pairs: list[list[Segment | None]] = []
    for segment in message.segments:
        if segment.name == "ORC":
            pairs.append([segment, None])
        elif segment.name == "OBR":
            if not pairs:
                raise MissingRequiredField(
                    "OBR without a preceding ORC", control_id=ctx.control_id, field="ORC"
                )
            if pairs[-1][1] is None:
                pairs[-1][1] = segment
            else:
                pairs.append([pairs[-1][0], segment])
    if not pairs:
        require_segment(message, "ORC", ctx)
    items = [_item(orc, obr, ctx) for orc, obr in pairs if orc is not None]
    return [Draft(ORDER, pid, {"items": items}, message.first("PD1"))]


def _item(orc: Segment, obr: Segment | None, ctx: Context) -> dict[str, Any]:
    control = value(orc, 1)
    if control is None:
        raise MissingRequiredField(
            "ORC-1 (order control) is empty", control_id=ctx.control_id, field="ORC-1"
        )
    return {
        "order_control": control,
        "placer_order_number": value(orc, 2) or value(obr, 2),
        "filler_order_number": value(orc, 3) or value(obr, 3),
        "order_status": value(orc, 5),
        "test_code": value(obr, 4, 1),
        "test_text": value(obr, 4, 2),
        "coding_system": value(obr, 4, 3),
    }
