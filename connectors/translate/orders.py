"""ORM^O01 and OML^O21: tests ordered, changed or cancelled, one item per ORC/OBR."""

from __future__ import annotations

from typing import Any

from carebus.errors import MissingRequiredField
from connectors.hl7 import Layout, Message, Segment
from connectors.translate.common import Context, Draft, read, require_segment

ORDER = "carebus.events.Order"

#: ORC-1 (order control), 2 (placer order number), 3 (filler order number), 5 (status).
ORC = Layout((1, 2, 3, 5), null_as_empty=True)
#: OBR-2 and 3 (placer and filler order numbers), then OBR-4.1 to 4.3 (test code, text,
#: coding system).
OBR = Layout((2, 3), ((4, 3),), null_as_empty=True)


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
    control, placer, filler, status = orc.read(ORC)
    if not control:
        raise MissingRequiredField(
            "ORC-1 (order control) is empty", control_id=ctx.control_id, field="ORC-1"
        )
    obr_placer, obr_filler, code, text, coding_system = read(obr, OBR)
    return {
        "order_control": control,
        "placer_order_number": placer or obr_placer or None,
        "filler_order_number": filler or obr_filler or None,
        "order_status": status or None,
        "test_code": code or None,
        "test_text": text or None,
        "coding_system": coding_system or None,
    }
