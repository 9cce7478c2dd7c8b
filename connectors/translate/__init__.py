"""HL7 v2 messages to carebus events.

:func:`translate` turns one parsed message into its events: the family event(s)
of its message type, each followed by a ``PatientDied`` when the message shows
the patient dead. :data:`TRANSLATORS` is the explicit table of what is
translated; anything else is rejected with
:class:`~carebus.errors.UnsupportedMessageType`. Translation is pure: the
received time is passed in, every other time comes from the message.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from hashlib import sha256

from carebus.errors import MissingRequiredField, UnsupportedMessageType
from connectors.hl7 import Layout, Message
from connectors.translate import adt, documents, orders, problems, referral, results, scheduling
from connectors.translate.common import (
    HEADER,
    PATIENT_DIED,
    Context,
    Draft,
    Event,
    discharged_died,
    event_id,
    patient,
    required_time,
)
from connectors.translate.time import to_millis

Translator = Callable[[Message, Context], list[Draft]]

#: EVN-1 (trigger event, when MSH-9.2 is empty), EVN-2 (recorded) and EVN-6 (occurred).
EVENT = Layout((1, 2, 6), null_as_empty=True)

#: (MSH-9.1, MSH-9.2) -> translator. Nothing else is translated.
TRANSLATORS: dict[tuple[str, str], Translator] = {
    **{("ADT", trigger): adt.encounter for trigger in adt.ENCOUNTER_KINDS},
    ("ADT", "A08"): adt.demographics,
    ("ADT", "A28"): adt.demographics,
    ("ADT", "A31"): adt.demographics,
    ("ADT", "A40"): adt.merge,
    ("REF", "I12"): referral.referral,
    **{("SIU", trigger): scheduling.appointment for trigger in scheduling.ACTIONS},
    ("ORM", "O01"): orders.order,
    ("OML", "O21"): orders.order,
    ("ORU", "R01"): results.result,
    **{("MDM", f"T{n:02d}"): documents.document for n in range(1, 12)},
    **{("PPR", trigger): problems.problem for trigger in problems.ACTIONS},
}


def translate(message: Message, *, raw: bytes, received_time: datetime) -> list[Event]:
    """The events of one message, family event first; rejections raise.

    ``raw`` is the message as received (its SHA-256 goes in every header);
    ``received_time`` is when the edge received it. Raises a
    :class:`~carebus.errors.MessageRejected` subclass, with ``control_id`` set
    when MSH-10 could be read.
    """
    (
        application,
        facility,
        receiving_application,
        receiving_facility,
        msh7,
        control_id,
        version,
        message_type,
        trigger,
    ) = message.read("MSH", HEADER)
    if not control_id:
        raise MissingRequiredField("MSH-10 (message control id) is empty", field="MSH-10")
    evn_type, recorded, occurred = message.read("EVN", EVENT)
    message_type = message_type.upper()
    trigger = (trigger or evn_type).upper()
    if not message_type or not trigger:
        raise MissingRequiredField(
            "MSH-9 (message type and trigger event) is empty", control_id=control_id, field="MSH-9"
        )
    translator = TRANSLATORS.get((message_type, trigger))
    if translator is None:
        raise UnsupportedMessageType(
            f"{message_type}^{trigger} is not translated", control_id=control_id, field="MSH-9"
        )
    if not facility:
        raise MissingRequiredField(
            "MSH-4 (sending facility) is empty", control_id=control_id, field="MSH-4"
        )
    message_time = required_time(msh7, "MSH-7", control_id)
    # EVN-6, else EVN-2, else MSH-7; a present but unreadable EVN time is rejected.
    if occurred:
        when = required_time(occurred, "EVN-6", control_id)
    elif recorded:
        when = required_time(recorded, "EVN-2", control_id)
    else:
        when = message_time
    ctx = Context(control_id, message_type, trigger, facility, when)
    drafts = translator(message, ctx)
    # The header of the first event; the others differ only by their event id.
    first_header = {
        "event_id": event_id(ctx, msh7, 0),
        "message_type": message_type,
        "trigger_event": trigger,
        "control_id": control_id,
        "sending_application": application or None,
        "sending_facility": facility,
        "receiving_application": receiving_application or None,
        "receiving_facility": receiving_facility or None,
        "hl7_version": version,
        "event_time": when,
        "message_time": message_time,
        "received_time": to_millis(received_time),
        "raw_sha256": sha256(raw).hexdigest(),
    }
    discharged_dead = trigger == "A03" and discharged_died(message, ctx)
    events: list[Event] = []
    for draft in drafts:
        person, evidence = patient(draft.pid, draft.pd1, ctx)
        key = person["key"]
        header = (
            dict(first_header, event_id=event_id(ctx, msh7, len(events)))
            if events
            else first_header
        )
        events.append(
            Event(draft.schema, key, {"header": header, "patient": person, **draft.fields})
        )
        if discharged_dead:
            evidence += ("DISCHARGE_DESTINATION",)
        if evidence:
            header = dict(first_header, event_id=event_id(ctx, msh7, len(events)))
            died = {
                "header": header,
                "patient": person,
                "death_time": person["death_time"] or when,
                "evidence": list(evidence),
            }
            events.append(Event(PATIENT_DIED, key, died))
    return events


__all__ = ["TRANSLATORS", "Event", "Translator", "translate"]
