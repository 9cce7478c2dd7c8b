"""A read-only view of one event record, with the header fields rules use most.

Events are the records of ``docs/architecture.md`` ("Events"): a dict with
``header`` and ``patient`` and the family fields, timestamps timezone-aware UTC
``datetime``s. The engine accepts anything with ``schema`` (the full Avro name,
``carebus.events.Encounter``) and ``record`` attributes: the translator's
``Event``, or :class:`StreamEvent` built from a decoded Kafka record.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, NamedTuple, Protocol

from streams.deadlines import to_micros

ENCOUNTER: Final = "Encounter"
DEMOGRAPHICS: Final = "PatientDemographics"
MERGED: Final = "PatientMerged"
REFERRAL: Final = "Referral"
APPOINTMENT: Final = "Appointment"
ORDER: Final = "Order"
RESULT: Final = "Result"
DOCUMENT: Final = "Document"
PROBLEM: Final = "Problem"
DIED: Final = "PatientDied"

SCHEMAS: Final = frozenset(
    {ENCOUNTER, DEMOGRAPHICS, MERGED, REFERRAL, APPOINTMENT, ORDER, RESULT, DOCUMENT, PROBLEM, DIED}
)


class EventLike(Protocol):
    """What the engine needs of an event: its schema name and its record."""

    @property
    def schema(self) -> str: ...

    @property
    def record(self) -> Mapping[str, Any]: ...


class StreamEvent(NamedTuple):
    """A plain event, for callers that decoded ``(schema, record)`` themselves."""

    schema: str
    key: str
    record: Mapping[str, Any]


_SHORT_NAMES: dict[str, str] = {}


def short_name(schema: str) -> str:
    """``carebus.events.Encounter`` -> ``Encounter`` (cached)."""
    name = _SHORT_NAMES.get(schema)
    if name is None:
        name = _SHORT_NAMES.setdefault(schema, schema.rpartition(".")[2])
    return name


class EventView:
    """The fields of one event that the engine and rules read most, computed once.

    Built once per event and shared by every rule that looks at it: the rules read
    these slots instead of digging in the record, and the event time is converted
    to epoch microseconds here, once.
    """

    __slots__ = (
        "control_id",
        "event_time",
        "header",
        "nhs_number",
        "patient_key",
        "record",
        "ref",
        "schema",
        "sender",
        "time",
        "trigger",
    )

    def __init__(self, schema: str, record: Mapping[str, Any]) -> None:
        header = record["header"]
        patient = record["patient"]
        event_time: datetime = header["event_time"]
        sender: str = header["sending_facility"] or ""
        control_id: str = header["control_id"] or ""
        self.schema = _SHORT_NAMES.get(schema) or short_name(schema)
        self.record = record
        self.header: Mapping[str, Any] = header
        self.trigger: str = header["trigger_event"] or ""
        self.control_id = control_id
        self.sender = sender
        #: the message, unique in the region: sending provider and MSH-10
        self.ref = f"{sender}:{control_id}"
        #: the event time, as in the record (aware) and in epoch microseconds
        self.event_time = event_time
        self.time = to_micros(event_time)
        self.patient_key: str = patient["key"]
        self.nhs_number: str | None = patient["nhs_number"]

    @property
    def message_type(self) -> str:
        """MSH-9.1."""
        return str(self.header["message_type"] or "")

    @property
    def receiver(self) -> str:
        """The receiving facility, MSH-6.1 (``""`` when absent)."""
        return str(self.header["receiving_facility"] or "")

    @classmethod
    def of(cls, event: EventLike) -> EventView:
        """The view of an event object."""
        return cls(event.schema, event.record)
