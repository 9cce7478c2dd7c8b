"""What every event shares: header, patient key and identifiers, death, times.

Translators (one module per message family) return :class:`Draft` family events;
:func:`connectors.translate.translate` completes them with the header and patient
built here. Everything is pure: time comes from the message and the caller.
Rejection messages name fields and control ids, never values.

This is the hot path of every connector and of ``carebus simulate``: fields with
several components are split once (:func:`component_values`) rather than read
one :func:`value` at a time.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import date, datetime
from dataclasses import dataclass
from typing import Any

from carebus.errors import InvalidIdentifier, MissingRequiredField
from connectors.hl7 import Message, Segment
from connectors.nhs import normalise_nhs_number
from connectors.translate.time import parse_date, parse_dtm

#: Namespace of the deterministic event ids (uuid5 over facility, control id, MSH-7, index).
EVENT_ID_NAMESPACE = uuid.UUID("6f1c2a5e-8d4b-5e7f-9a3c-2b1d0e4f6a8c")
#: SHA-1 already fed the namespace, as uuid5 starts; copied for every id.
_EVENT_ID_SEED = hashlib.sha1(EVENT_ID_NAMESPACE.bytes, usedforsecurity=False)
#: uuid5 variant bits: the first hex digit of the fourth group becomes 8, 9, a or b.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}

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


@dataclass(slots=True)
class Context:
    """What translators may need about the message besides its segments (read-only).

    Not frozen: a frozen dataclass costs a microsecond to build, once per message.
    """

    control_id: str
    message_type: str
    trigger_event: str
    sending_facility: str
    event_time: datetime
    subcomponent: str = "&"


@dataclass(slots=True)
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
    return text if text and text != HL7_NULL else None


def component_values(
    segment: Segment, field: int, count: int, ctx: Context, *, repetition: int = 1
) -> list[str | None]:
    """Components 1 to ``count`` of one repetition, each as :func:`value` reads it.

    Always ``count`` items; an absent, empty or HL7-null component is None. The
    field is split once: much cheaper than one :func:`value` per component.
    """
    parts = segment.components(field, repetition)[:count]
    subcomponent = ctx.subcomponent
    if subcomponent and subcomponent in "".join(parts):  # rare: take the first sub-component
        return [
            component(segment, parts, field, index, ctx, repetition=repetition)
            for index in range(1, count + 1)
        ]
    values: list[str | None] = [text if text and text != HL7_NULL else None for text in parts]
    if len(values) < count:
        values.extend([None] * (count - len(values)))
    return values


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


def event_time(evn: Segment | None, message_time: datetime, control_id: str) -> datetime:
    """EVN-6, else EVN-2, else MSH-7 (already parsed as ``message_time``)."""
    if evn is not None:
        for field in (6, 2):
            if value(evn, field) is not None:
                return required_time(evn, field, f"EVN-{field}", control_id)
    return message_time


def header_base(
    msh: Segment,
    ctx: Context,
    *,
    message_time: datetime,
    received_time: datetime,
    raw: bytes,
) -> dict[str, Any]:
    """The header fields every event of one message shares (all but ``event_id``)."""
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
    """The id of the ``index``-th event of a message: the same message, the same ids.

    Equal to ``str(uuid.uuid5(EVENT_ID_NAMESPACE, name))``, built without UUID objects
    (this is on the hot path).
    """
    name = f"{ctx.sending_facility}\x1f{ctx.control_id}\x1f{msh7}\x1f{index}"
    sha1 = _EVENT_ID_SEED.copy()
    sha1.update(name.encode())
    h = sha1.hexdigest()
    # Version 5 in the first digit of the third group, the RFC 4122 variant in the fourth.
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


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
        ident, _, _, authority, type_code = component_values(
            segment, field, 5, ctx, repetition=rep
        )
        if ident is None:
            continue
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
    family, given, middle, _, title = component_values(pid, 5, 5, ctx)
    gp: str | None = None
    practitioner: str | None = None
    if pd1 is not None:
        practice = component_values(pd1, 3, 10, ctx)
        gp = practice[2] or practice[9] or practice[0]
        practitioner = value(pd1, 4)
    return {
        "family_name": family,
        "given_names": [name for name in (given, middle) if name],
        "title": title,
        "birth_date": optional_date(pid, 7),
        "sex": value(pid, 8),
        "address": address(pid, 11, ctx),
        "registered_gp": gp,
        "registered_gp_practitioner": practitioner,
    }


def address(segment: Segment, field: int, ctx: Context) -> dict[str, Any] | None:
    """The first repetition of an XAD field as a ``carebus.events.Address``, or None."""
    first, second, city, county, postcode, country = component_values(segment, field, 6, ctx)
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


def death_evidence(pid: Segment, person: dict[str, Any], message: Message, ctx: Context) -> list[str]:
    """What in the message shows the patient dead (empty when nothing does).

    ``person`` is :func:`patient` of ``pid``: its death indicator is PID-30 read once.
    """
    evidence = []
    if person["death_indicator"] is True:
        evidence.append("DEATH_INDICATOR")
    if value(pid, 29) is not None:
        evidence.append("DEATH_TIME")
    if (
        ctx.trigger_event == "A03"
        and ctx.message_type == "ADT"
        and value(message.first("PV1"), 37) == "79"
    ):
        evidence.append("DISCHARGE_DESTINATION")
    return evidence
