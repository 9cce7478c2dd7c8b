"""Building HL7 v2 test messages and translating them, checking every event on the way.

Messages follow the NHS ITK v2.4 style of the rules spec's examples: PID-3 carries
the NHS number (authority NHS, type NH) and a local MRN.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastavro.validation import validate

import schemas
from connectors.hl7 import parse_message
from connectors.translate import Event, translate
from schemas import codec
from schemas.codec import parse

RECEIVED = datetime(2026, 2, 9, 9, 0, 5, 123456, tzinfo=UTC)
NHS_NUMBER = "9434765919"
PID3 = f"{NHS_NUMBER}^^^NHS^NH~MRN0101^^^RX1^MR"

_PARSED = {name: parse(schemas.schema(name)) for name in schemas.RECORD_SCHEMAS}


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from field number -> raw value (unlisted fields empty)."""
    last = max(fields, default=0)
    return "|".join([name, *(fields.get(i, "") for i in range(1, last + 1))])


def msh(
    message_type: str,
    *,
    control_id: str = "MSG000001",
    facility: str = "RX1",
    receiving: str = "G0001",
    time: str = "20260209090000",
    version: str = "2.4",
) -> str:
    """An MSH segment (MSH-1 and MSH-2 standard)."""
    return (
        f"MSH|^~\\&|EPR|{facility}|CAREBUS|{receiving}|{time}||{message_type}|{control_id}|P|"
        f"{version}|||AL|NE"
    )


def pid(pid3: str = PID3, **extra: str) -> str:
    """An ITK-style PID segment; keyword arguments ``f29="..."`` set further fields."""
    fields = {
        1: "1",
        3: pid3,
        5: "TESTER^PAT^ANN^^MRS",
        7: "19450312",
        8: "F",
        11: "1 HIGH ST^FLAT 2^STOKE-ON-TRENT^STAFFS^ST4 1AA^GBR",
    }
    fields.update({int(k[1:]): v for k, v in extra.items()})
    return segment("PID", fields)


def evn(recorded: str = "20260209090000", occurred: str = "") -> str:
    """An EVN segment with EVN-2 (recorded) and EVN-6 (event occurred)."""
    return segment("EVN", {1: "", 2: recorded, 6: occurred})


def message(*segments: str) -> bytes:
    """Segments joined with CR, as bytes."""
    return "\r".join(segments).encode()


def translate_raw(raw: bytes) -> list[Event]:
    """Parse and translate ``raw``; every event must fit its schema and round-trip."""
    events = translate(parse_message(raw), raw=raw, received_time=RECEIVED)
    for event in events:
        validate(event.record, _PARSED[event.schema], raise_errors=True, strict=True)
        assert codec.decode(codec.encode(event.schema, event.record)) == (
            event.schema,
            event.record,
        )
        assert event.key == event.record["patient"]["key"]
    return events


def translate_segments(*segments: str) -> list[Event]:
    """:func:`translate_raw` of the segments joined with CR."""
    return translate_raw(message(*segments))


def only(events: list[Event]) -> Event:
    """The single event of a message that gives exactly one."""
    assert len(events) == 1, [e.schema for e in events]
    return events[0]
