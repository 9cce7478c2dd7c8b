"""ORM^O01 and OML^O21: tests ordered, changed or cancelled, one item per ORC/OBR."""

from __future__ import annotations

from typing import Any

from carebus.errors import MissingRequiredField
from connectors.hl7 import Message, Segment
from connectors.translate.common import Context, Draft, component_texts, require_segment, texts

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
    control, placer, filler, status = texts(orc, 1, 2, 3, 5)
    if not control:
        raise MissingRequiredField(
            "ORC-1 (order control) is empty", control_id=ctx.control_id, field="ORC-1"
        )
    obr_placer, obr_filler = texts(obr, 2, 3)
    code, text, coding_system = component_texts(obr, 4, 3)
    return {
        "order_control": control,
        "placer_order_number": placer or obr_placer or None,
        "filler_order_number": filler or obr_filler or None,
        "order_status": status or None,
        "test_code": code or None,
        "test_text": text or None,
        "coding_system": coding_system or None,
    }
