"""ORU^R01: results, one request per OBR with the OBX segments that follow it.

A message with several patient groups (one PID each) gives one ``Result`` per group.
"""

from __future__ import annotations

from typing import Any

from carebus.errors import MissingRequiredField
from connectors.hl7 import Layout, Message, Segment
from connectors.translate.common import (
    HL7_NULL,
    Context,
    Draft,
    as_time,
    read,
    require_segment,
    value,
)

RESULT = "carebus.events.Result"


def result(message: Message, ctx: Context) -> list[Draft]:
    """One ``Result`` per patient group."""
    require_segment(message, "PID", ctx)
    drafts: list[Draft] = []
    pid: Segment | None = None
    pd1: Segment | None = None
    orc: Segment | None = None
    requests: list[dict[str, Any]] = []
    for segment in message.segments:
        name = segment.name
        if name == "PID":
            if pid is not None:
                drafts.append(Draft(RESULT, pid, {"requests": requests}, pd1))
            pid, pd1, orc, requests = segment, None, None, []
        elif name == "PD1" and pid is not None and pd1 is None:
            pd1 = segment
        elif name == "ORC":
            orc = segment
        elif name in ("OBR", "OBX"):
            if pid is None:
                raise MissingRequiredField(
                    f"{name} before the first PID", control_id=ctx.control_id, field="PID"
                )
            if name == "OBR":
                requests.append(_request(segment, orc))
            else:
                if not requests:
                    requests.append(_request(None, orc))
                requests[-1]["observations"].append(observation(segment))
    if pid is not None:
        drafts.append(Draft(RESULT, pid, {"requests": requests}, pd1))
    return drafts


#: OBR-2 (placer order number), 3 (filler order number), 7 (observation time), 25
#: (status), then OBR-4.1 to 4.3 (test code, text, coding system).
OBR = Layout((2, 3, 7, 25), ((4, 3),), null_as_empty=True)
#: OBX-1 (set id), 2 (value type), 6 (units), 7 (reference range), 11 (status), 14
#: (observation time), then OBX-3.1 to 3.3 (code, text, coding system).
OBX = Layout((1, 2, 6, 7, 11, 14), ((3, 3),), null_as_empty=True)


def _request(obr: Segment | None, orc: Segment | None) -> dict[str, Any]:
    placer, filler, observed, status, code, text, coding_system = read(obr, OBR)
    return {
        "test_code": code or None,
        "test_text": text or None,
        "coding_system": coding_system or None,
        "status": status or None,
        "observation_time": as_time(observed),
        "placer_order_number": placer or value(orc, 2),
        "filler_order_number": filler or value(orc, 3),
        "observations": [],
    }


def observation(obx: Segment) -> dict[str, Any]:
    """An OBX segment as a ``carebus.events.Observation``."""
    set_id, value_type, units, reference_range, status, observed, code, text, coding_system = (
        obx.read(OBX)
    )
    return {
        "set_id": set_id or None,
        "value_type": value_type or None,
        "code": code or None,
        "text": text or None,
        "coding_system": coding_system or None,
        "value": observation_value(obx),
        "units": units or None,
        "reference_range": reference_range or None,
        "abnormal_flags": [
            flag for (flag,) in obx.repetition_values(8, 1) if flag and flag != HL7_NULL
        ],
        "status": status or None,
        "observation_time": as_time(observed),
    }


def observation_value(obx: Segment) -> str | None:
    """OBX-5 unescaped: components joined by ``^``, repetitions by ``~``.

    Trailing empty components are dropped; sub-components stay as sent.
    """
    raw = obx.raw(5)
    if not raw or raw == HL7_NULL:
        return None
    repetitions = []
    for components in obx.all_components(5):  # one split: linear in OBX-5's size
        while components and not components[-1]:
            components.pop()
        repetitions.append("^".join(components))
    return "~".join(repetitions) or None
