"""What every event shares: header, patient key and identifiers, death, times.

Translators (one module per message family) return :class:`Draft` family events;
:func:`connectors.translate.translate` completes them with the header and patient
built here. Everything is pure: time comes from the message and the caller.
Rejection messages name fields and control ids, never values.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from carebus.errors import InvalidIdentifier, MissingRequiredField
from connectors.hl7 import Message, Segment
from connectors.nhs import normalise_nhs_number
from connectors.translate.time import parse_date, parse_dtm

#: Namespace of the deterministic event ids (uuid5 over facility, control id, MSH-7, index).
EVENT_ID_NAMESPACE = uuid.UUID("6f1c2a5e-8d4b-5e7f-9a3c-2b1d0e4f6a8c")
_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes

PATIENT_DIED = "carebus.events.PatientDied"

#: HL7's explicit null: "delete this value". Treated as empty everywhere.
HL7_NULL = '""'


@dataclass(frozen=True, slots=True)
class Event:
    """One translated event: full Avro schema name, patient key, Avro record as a dict.

    Events of one message share parts of their records (the patient, for one):
    treat records as read-only.
    """

    schema: str
    key: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Context:
    """What translators may need about the message besides its segments."""

    control_id: str
    message_type: str
    trigger_event: str
    sending_facility: str
    event_time: datetime
    subcomponent: str = "&"


@dataclass(frozen=True, slots=True)
class Draft:
    """A family event before its header and patient are added: schema, PID, own fields."""

    schema: str
    pid: Segment
    fields: dict[str, Any]
    pd1: Segment | None = None


def value(
    segment: Segment | None,
    field: int,
    component: int = 1,
    subcomponent: int = 1,
    repetition: int = 1,
) -> str | None:
    """One unescaped value, or None when the segment or value is absent, empty or HL7 null."""
    if segment is None:
        return None
    text = segment.get(field, component, subcomponent, repetition)
    if not text or text == HL7_NULL:
        return None
    return text


def component(
    segment: Segment, parts: list[str], field: int, index: int, ctx: Context, *, repetition: int = 1
) -> str | None:
    """Component ``index`` (1-based) of already split ``parts``: its first sub-component.

    ``parts`` is ``segment.components(field, repetition)``; splitting a field once
    and picking several components is much cheaper than one :func:`value` each.
    """
    if index > len(parts):
        return None
    text = parts[index - 1]
    if not text or text == HL7_NULL:
        return None
    if ctx.subcomponent and ctx.subcomponent in text:
        return value(segment, field, index, 1, repetition)
    return text


def optional_time(segment: Segment | None, field: int, component: int = 1) -> datetime | None:
    """A date/time (UTC) or None when absent or not a valid HL7 date/time."""
    text = value(segment, field, component)
    if text is None:
        return None
    try:
        return parse_dtm(text)
    except ValueError:
        return None


def required_time(segment: Segment, field: int, label: str, control_id: str) -> datetime:
    """A date/time (UTC); :class:`MissingRequiredField` when absent or unreadable."""
    text = value(segment, field)
    if text is None:
        raise MissingRequiredField(f"{label} is empty", control_id=control_id, field=label)
    try:
        return parse_dtm(text)
    except ValueError:
        raise MissingRequiredField(
            f"{label} is not a valid HL7 date/time", control_id=control_id, field=label
        ) from None


def optional_date(segment: Segment | None, field: int) -> date | None:
    """A calendar date (day precision at least), or None."""
    text = value(segment, field)
    if text is None:
        return None
    try:
        return parse_date(text)
    except ValueError:
        return None


def require_segment(message: Message, name: str, ctx: Context) -> Segment:
    """The first ``name`` segment; :class:`MissingRequiredField` when there is none."""
    segment = message.first(name)
    if segment is None:
        raise MissingRequiredField(
            f"{ctx.message_type}^{ctx.trigger_event} has no {name} segment",
            control_id=ctx.control_id,
            field=name,
        )
    return segment


# -- event time and header ------------------------------------------------------------


def event_time(message: Message, message_time: datetime, control_id: str) -> datetime:
    """EVN-6, else EVN-2, else MSH-7 (already parsed as ``message_time``)."""
    evn = message.first("EVN")
    if evn is not None:
        for field in (6, 2):
            if value(evn, field) is not None:
                return required_time(evn, field, f"EVN-{field}", control_id)
    return message_time


def header_base(
    message: Message,
    ctx: Context,
    *,
    message_time: datetime,
    received_time: datetime,
    raw: bytes,
) -> dict[str, Any]:
    """The header fields every event of one message shares (all but ``event_id``)."""
    msh = message.msh
    return {
        "event_id": "",
        "message_type": ctx.message_type,
        "trigger_event": ctx.trigger_event,
        "control_id": ctx.control_id,
        "sending_application": value(msh, 3),
        "sending_facility": ctx.sending_facility,
        "receiving_application": value(msh, 5),
        "receiving_facility": value(msh, 6),
        "hl7_version": value(msh, 12) or "",
        "event_time": ctx.event_time,
        "message_time": message_time,
        "received_time": received_time,
        "raw_sha256": hashlib.sha256(raw).hexdigest(),
    }


def event_id(ctx: Context, msh7: str, index: int) -> str:
    """The id of the ``index``-th event of a message: the same message, the same ids."""
    name = f"{ctx.sending_facility}\x1f{ctx.control_id}\x1f{msh7}\x1f{index}"
    # uuid.uuid5, without building a UUID object (this is on the hot path).
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# -- identifiers and the patient key --------------------------------------------------


def identifiers(
    segment: Segment, field: int, label: str, ctx: Context
) -> tuple[list[dict[str, Any]], str, str | None]:
    """Every CX repetition of a field, the patient key they give, and the NHS number.

    The key is the first NHS-number repetition (authority ``NHS`` or type ``NH``)
    that passes modulus 11; else ``AUTHORITY:ID`` of the first other repetition
    (the sending facility when CX.4.1 is empty); else ``NHS:ID`` of the first
    failing NHS number. :class:`InvalidIdentifier` when no repetition has a value.
    """
    found: list[dict[str, Any]] = []
    nhs_number: str | None = None
    local_key: str | None = None
    failed_nhs_key: str | None = None
    for rep in range(1, segment.repetitions(field) + 1):
        parts = segment.components(field, rep)
        ident = component(segment, parts, field, 1, ctx, repetition=rep)
        if ident is None:
            continue
        authority = component(segment, parts, field, 4, ctx, repetition=rep)
        type_code = component(segment, parts, field, 5, ctx, repetition=rep)
        nhs_repetition = (authority or "").upper() == "NHS" or (type_code or "").upper() == "NH"
        valid = normalise_nhs_number(ident) if nhs_repetition else None
        found.append(
            {
                "value": ident,
                "authority": authority,
                "type_code": type_code,
                "valid_nhs_number": valid is not None,
            }
        )
        if valid is not None:
            if nhs_number is None:
                nhs_number = valid
        elif not nhs_repetition:
            if local_key is None:
                local_key = f"{authority or ctx.sending_facility}:{ident}"
        elif failed_nhs_key is None:
            failed_nhs_key = f"NHS:{ident}"
    key = nhs_number or local_key or failed_nhs_key
    if key is None:
        raise InvalidIdentifier(
            f"{label} has no identifier", control_id=ctx.control_id, field=label
        )
    return found, key, nhs_number


def patient(pid: Segment, pd1: Segment | None, ctx: Context) -> dict[str, Any]:
    """The ``carebus.events.Patient`` record of a PID (and PD1) segment."""
    found, key, nhs_number = identifiers(pid, 3, "PID-3", ctx)
    indicator = value(pid, 30)
    return {
        "key": key,
        "nhs_number": nhs_number,
        "nhs_number_status": value(pid, 32),
        "identifiers": found,
        "death_time": optional_time(pid, 29),
        "death_indicator": True if indicator == "Y" else False if indicator == "N" else None,
        "demographics": demographics(pid, pd1, ctx),
    }


def demographics(pid: Segment, pd1: Segment | None, ctx: Context) -> dict[str, Any]:
    """The ``carebus.events.Demographics`` record of a PID (and PD1) segment."""
    name = pid.components(5)
    given = [
        part for part in (component(pid, name, 5, 2, ctx), component(pid, name, 5, 3, ctx)) if part
    ]
    gp: str | None = None
    if pd1 is not None:
        practice = pd1.components(3)
        gp = (
            component(pd1, practice, 3, 3, ctx)
            or component(pd1, practice, 3, 10, ctx)
            or component(pd1, practice, 3, 1, ctx)
        )
    return {
        "family_name": component(pid, name, 5, 1, ctx),
        "given_names": given,
        "title": component(pid, name, 5, 5, ctx),
        "birth_date": optional_date(pid, 7),
        "sex": value(pid, 8),
        "address": address(pid, 11, ctx),
        "registered_gp": gp,
        "registered_gp_practitioner": value(pd1, 4),
    }


def address(segment: Segment, field: int, ctx: Context) -> dict[str, Any] | None:
    """The first repetition of an XAD field as a ``carebus.events.Address``, or None."""
    parts = segment.components(field)
    if not parts:
        return None
    first, second, city, county, postcode, country = (
        component(segment, parts, field, index, ctx) for index in range(1, 7)
    )
    if first is second is city is county is postcode is country is None:
        return None
    return {
        "lines": [line for line in (first, second) if line],
        "city": city,
        "county": county,
        "postcode": postcode,
        "country": country,
    }


# -- death ----------------------------------------------------------------------------


def death_evidence(pid: Segment, message: Message, ctx: Context) -> list[str]:
    """What in the message shows the patient dead (empty when nothing does)."""
    evidence = []
    if value(pid, 30) == "Y":
        evidence.append("DEATH_INDICATOR")
    if value(pid, 29) is not None:
        evidence.append("DEATH_TIME")
    if (
        ctx.message_type == "ADT"
        and ctx.trigger_event == "A03"
        and value(message.first("PV1"), 37) == "79"
    ):
        evidence.append("DISCHARGE_DESTINATION")
    return evidence
