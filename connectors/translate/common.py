"""What every event shares: header, patient key and identifiers, death, times.

Translators (one module per message family) return :class:`Draft` family events;
:func:`connectors.translate.translate` completes them with the header and patient
built here. Everything is pure: time comes from the message and the caller.
Rejection messages name fields and control ids, never values.

This is the hot path of every connector and of ``carebus simulate``, so segments
are read a few fields at a time: :func:`read` gives everything a translator needs of
a segment in one call (first values and components, as a
:class:`~connectors.hl7.Layout` says), :func:`texts` the first value of several
fields and :func:`component_texts` several components of one field. They read
values as :func:`value` does but give ``""`` where it gives None, so a record field
is ``text or None``.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from itertools import islice
from typing import Any, NamedTuple

from carebus.errors import InvalidIdentifier, MissingRequiredField
from connectors.hl7 import Encoding, Layout, Message, Segment
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

#: NHS number validation, memoised: a feed repeats each patient's number.
_nhs_number = functools.lru_cache(maxsize=16_384)(normalise_nhs_number)

#: Patient records and their death evidence by PID text, with what else they are made
#: of: the PD1 text, the delimiters, and the sending facility when the patient key is
#: made of it. A feed repeats each patient's PID (from several senders), and building
#: the record is a third of translating an ADT message. The older half goes when full.
_PATIENTS: dict[str, tuple[str | None, Encoding, str | None, dict[str, Any], tuple[str, ...]]] = {}
_PATIENTS_MAX = 4096


class Event(NamedTuple):
    """One translated event: full Avro schema name, patient key, Avro record as a dict.

    Events share parts of their records (the patient, for one, within a message and
    across messages): treat records as read-only. A named tuple rather than a frozen
    dataclass: as immutable, and three times cheaper to build on the hot path.
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


@dataclass(slots=True)
class Draft:
    """A family event before its header and patient are added: schema, PID, own fields."""

    schema: str
    pid: Segment
    fields: dict[str, Any]
    pd1: Segment | None = None


# -- reading values -------------------------------------------------------------------


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


def read(segment: Segment | None, layout: Layout) -> list[str]:
    """``segment.read(layout)``, or ``[""] * layout.width`` when the segment is absent.

    Translators' layouts read HL7 nulls as ``""`` (``null_as_empty``), as :func:`value`
    reads them.
    """
    if segment is None:
        return [""] * layout.width
    return segment.read(layout)


def texts(segment: Segment | None, *fields: int) -> list[str]:
    """The first value of each field, read as :func:`value` does; ``""`` where it gives None."""
    if segment is None:
        return [""] * len(fields)
    found = segment.first_values(*fields)
    if HL7_NULL in found:
        return ["" if text == HL7_NULL else text for text in found]
    return found


def component_texts(
    segment: Segment | None, field: int, count: int, *, repetition: int = 1
) -> list[str]:
    """Components 1 to ``count`` of a field's repetition, read as :func:`value` reads each.

    The field is split once. ``""`` stands where :func:`value` gives None.
    """
    if segment is None:
        return [""] * count
    found = segment.component_values(field, count, repetition)
    if HL7_NULL in found:
        return ["" if text == HL7_NULL else text for text in found]
    return found


def as_time(text: str) -> datetime | None:
    """``text`` as a date/time (UTC), or None when empty or not a valid HL7 date/time."""
    if not text:
        return None
    try:
        return parse_dtm(text)
    except ValueError:
        return None


def optional_time(segment: Segment | None, field: int, component: int = 1) -> datetime | None:
    """A date/time (UTC) or None when absent or not a valid HL7 date/time."""
    return as_time(value(segment, field, component) or "")


def required_time(text: str, label: str, control_id: str) -> datetime:
    """``text`` (field ``label``) as a UTC date/time; :class:`MissingRequiredField` if unusable."""
    if not text:
        raise MissingRequiredField(f"{label} is empty", control_id=control_id, field=label)
    try:
        return parse_dtm(text)
    except ValueError:
        raise MissingRequiredField(
            f"{label} is not a valid HL7 date/time", control_id=control_id, field=label
        ) from None


def as_date(text: str) -> date | None:
    """``text`` as a calendar date (day precision at least), or None."""
    if not text:
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


# -- header and event ids -------------------------------------------------------------

#: What the header is made of, read in one call: MSH-3 (sending application), 4
#: (sending facility), 5 and 6 (receiving application and facility), 7 (message
#: time), 10 (control id), 12 (version), then MSH-9.1 and 9.2 (message type, trigger).
HEADER = Layout((3, 4, 5, 6, 7, 10, 12), ((9, 2),), null_as_empty=True)


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
    found, key, nhs_number, _ = _identifiers(segment, field, label, ctx)
    return found, key, nhs_number


def _identifiers(
    segment: Segment, field: int, label: str, ctx: Context
) -> tuple[list[dict[str, Any]], str, str | None, bool]:
    """:func:`identifiers`, and whether the key is made of the sending facility."""
    found: list[dict[str, Any]] = []
    nhs_number: str | None = None
    local_key: str | None = None
    by_facility = False
    failed_nhs_key: str | None = None
    for components in segment.repetition_values(field, 5):
        ident, _, _, authority, type_code = (
            ["" if text == HL7_NULL else text for text in components]
            if HL7_NULL in components
            else components
        )
        if not ident:
            continue
        nhs_repetition = authority.upper() == "NHS" or type_code.upper() == "NH"
        valid = _nhs_number(ident) if nhs_repetition else None
        found.append(
            {
                "value": ident,
                "authority": authority or None,
                "type_code": type_code or None,
                "valid_nhs_number": valid is not None,
            }
        )
        if valid is not None:
            if nhs_number is None:
                nhs_number = valid
        elif not nhs_repetition:
            if local_key is None:
                by_facility = not authority
                local_key = f"{authority or ctx.sending_facility}:{ident}"
        elif failed_nhs_key is None:
            failed_nhs_key = f"NHS:{ident}"
    key = nhs_number or local_key or failed_nhs_key
    if key is None:
        raise InvalidIdentifier(
            f"{label} has no identifier", control_id=ctx.control_id, field=label
        )
    return found, key, nhs_number, by_facility and nhs_number is None


def patient(
    pid: Segment, pd1: Segment | None, ctx: Context
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The ``carebus.events.Patient`` record of a PID (and PD1), and the PID's death evidence.

    The evidence is ``DEATH_INDICATOR`` (PID-30 is Y) and ``DEATH_TIME`` (PID-29 given).
    Memoised (see :data:`_PATIENTS`): the record may be shared with other messages'
    events, so it is read-only like every record.
    """
    pd1_text = pd1.text if pd1 is not None else None
    encoding = pid.encoding
    facility = ctx.sending_facility
    text = pid.text
    found = _PATIENTS.get(text)
    if (
        found is not None
        and found[0] == pd1_text
        and found[1] == encoding
        and (found[2] is None or found[2] == facility)
    ):
        return found[3], found[4]
    record, evidence, by_facility = _patient(pid, pd1, ctx)
    # A value with an escape sequence may depend on the message's character set
    # (``\\Xhh\\``): only segments without one are remembered.
    esc = encoding.escape
    if not esc or (esc not in text and (pd1_text is None or esc not in pd1_text)):
        if len(_PATIENTS) >= _PATIENTS_MAX:
            # Forget the older half (a dict keeps insertion order): a patient's messages
            # come close together, so the recent ones are those worth keeping.
            for old in list(islice(_PATIENTS, _PATIENTS_MAX // 2)):
                del _PATIENTS[old]
        _PATIENTS[text] = (pd1_text, encoding, facility if by_facility else None, record, evidence)
    return record, evidence


#: What a patient record is made of besides PID-3, read in one call: PID-7 (birth
#: date), 8 (sex), 29 (death time), 30 (death indicator), 32 (NHS number status), then
#: PID-5.1 to 5.5 (name) and PID-11.1 to 11.6 (address).
PID = Layout((7, 8, 29, 30, 32), ((5, 5), (11, 6)), null_as_empty=True)
#: PD1-4 (registered practitioner), then PD1-3.1 to 3.10 (practice).
PD1 = Layout((4,), ((3, 10),), null_as_empty=True)


def _patient(
    pid: Segment, pd1: Segment | None, ctx: Context
) -> tuple[dict[str, Any], tuple[str, ...], bool]:
    """:func:`patient`, not memoised, and whether the key is made of the sending facility."""
    found, key, nhs_number, by_facility = _identifiers(pid, 3, "PID-3", ctx)
    values = pid.read(PID)
    died, indicator, status = values[2:5]
    record = {
        "key": key,
        "nhs_number": nhs_number,
        "nhs_number_status": status or None,
        "identifiers": found,
        "death_time": as_time(died),
        "death_indicator": True if indicator == "Y" else False if indicator == "N" else None,
        "demographics": _demographics(values, pd1),
    }
    evidence: tuple[str, ...] = ()
    if indicator == "Y":
        evidence += ("DEATH_INDICATOR",)
    if died:
        evidence += ("DEATH_TIME",)
    return record, evidence, by_facility


def demographics(pid: Segment, pd1: Segment | None) -> dict[str, Any]:
    """The ``carebus.events.Demographics`` record of a PID (and PD1) segment."""
    return _demographics(pid.read(PID), pd1)


def _demographics(values: list[str], pd1: Segment | None) -> dict[str, Any]:
    """:func:`demographics` given ``pid.read(PID)``."""
    birth, sex, _, _, _, family, given, middle, _, title = values[:10]
    gp = practitioner = None
    if pd1 is not None:
        practitioner, *practice = pd1.read(PD1)
        gp = practice[2] or practice[9] or practice[0] or None
    return {
        "family_name": family or None,
        "given_names": [name for name in (given, middle) if name],
        "title": title or None,
        "birth_date": as_date(birth),
        "sex": sex or None,
        "address": _address(values[10:16]),
        "registered_gp": gp,
        "registered_gp_practitioner": practitioner or None,
    }


def address(segment: Segment, field: int) -> dict[str, Any] | None:
    """The first repetition of an XAD field as a ``carebus.events.Address``, or None."""
    return _address(component_texts(segment, field, 6))


def _address(parts: list[str]) -> dict[str, Any] | None:
    """:func:`address` given XAD.1 to XAD.6 as read by :func:`component_texts`."""
    first, second, city, county, postcode, country = parts
    if not (first or second or city or county or postcode or country):
        return None
    return {
        "lines": [line for line in (first, second) if line],
        "city": city or None,
        "county": county or None,
        "postcode": postcode or None,
        "country": country or None,
    }


# -- death ----------------------------------------------------------------------------


def discharged_died(message: Message, ctx: Context) -> bool:
    """Whether the message is an ``ADT^A03`` whose PV1-37 is 79 (discharged: died).

    That is death evidence (``DISCHARGE_DESTINATION``) for every patient of the message,
    besides what each PID shows (from :func:`patient`).
    """
    return (
        ctx.trigger_event == "A03"
        and ctx.message_type == "ADT"
        and value(message.first("PV1"), 37) == "79"
    )
