"""Build event records as the translator makes them (docs/architecture.md, "Events").

A :class:`Feed` is one patient's story: each method returns a
:class:`streams.view.StreamEvent` with a fresh control id (``MSG0001``, ...), the
given sender and an event time written as Europe/London wall-clock time
(``"2026-03-29 01:30"``) or as an aware ``datetime``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from streams.alert import Alert
from streams.engine import Engine
from streams.state import PatientState
from streams.view import StreamEvent

LONDON = ZoneInfo("Europe/London")
NS = "carebus.events."

#: Valid NHS numbers (modulus 11), for tests.
NHS_NUMBERS = ("9434765919", "9434797373", "9434797748", "9434798116", "9434798485")

When = str | datetime


def london(text: When) -> datetime:
    """A Europe/London wall-clock time (``YYYY-MM-DD HH:MM``) as an aware UTC datetime."""
    if isinstance(text, datetime):
        return text.astimezone(UTC)
    return datetime.fromisoformat(text).replace(tzinfo=LONDON).astimezone(UTC)


class Feed:
    """Events about one patient, numbered in the order they are built."""

    def __init__(self, key: str = NHS_NUMBERS[0], *, verified: bool = True) -> None:
        self.key = key
        self.verified = verified
        self.count = 0

    # -- plumbing ------------------------------------------------------------------

    def _event(
        self,
        schema: str,
        message_type: str,
        trigger: str,
        sender: str,
        at: When,
        *,
        receiver: str = "CAREBUS",
        control_id: str | None = None,
        key: str | None = None,
        **family: Any,
    ) -> StreamEvent:
        if control_id is None:
            self.count += 1
            control_id = f"MSG{self.count:04d}"
        moment = london(at)
        key = key or self.key
        header = {
            "event_id": hashlib.sha256(f"{sender}|{control_id}|{schema}".encode()).hexdigest(),
            "message_type": message_type,
            "trigger_event": trigger,
            "control_id": control_id,
            "sending_application": "EPR",
            "sending_facility": sender,
            "receiving_application": "CAREBUS",
            "receiving_facility": receiver,
            "hl7_version": "2.4",
            "event_time": moment,
            "message_time": moment,
            "received_time": moment,
            "raw_sha256": "0" * 64,
        }
        nhs = key if self.verified and key.isdigit() else None
        patient = {
            "key": key,
            "nhs_number": nhs,
            "nhs_number_status": None,
            "identifiers": [
                {"value": key, "authority": "NHS", "type_code": "NH", "valid_nhs_number": bool(nhs)}
            ],
            "death_time": None,
            "death_indicator": None,
            "demographics": None,
        }
        return StreamEvent(NS + schema, key, {"header": header, "patient": patient, **family})

    # -- families ------------------------------------------------------------------

    def adt(
        self,
        trigger: str,
        sender: str,
        at: When,
        *,
        admission_type: str | None = None,
        discharge_destination: str | None = None,
        visit_number: str | None = None,
        **kw: Any,
    ) -> StreamEvent:
        """An ``Encounter`` (A01 admitted, A03 discharged, A04 registered, ...)."""
        kinds = {
            "A01": "ADMITTED",
            "A02": "TRANSFERRED",
            "A03": "DISCHARGED",
            "A04": "REGISTERED",
            "A05": "PRE_ADMITTED",
            "A11": "ADMISSION_CANCELLED",
            "A12": "TRANSFER_CANCELLED",
            "A13": "DISCHARGE_CANCELLED",
        }
        moment = london(at)
        return self._event(
            "Encounter",
            "ADT",
            trigger,
            sender,
            at,
            kind=kinds[trigger],
            visit_number=visit_number,
            patient_class="I",
            admission_type=admission_type,
            location=None,
            prior_location=None,
            discharge_disposition=None,
            discharge_destination=discharge_destination,
            admit_time=moment if trigger == "A01" else None,
            discharge_time=moment if trigger == "A03" else None,
            **kw,
        )

    def demographics(self, trigger: str, sender: str, at: When, **kw: Any) -> StreamEvent:
        """A ``PatientDemographics`` (A08, A28, A31)."""
        return self._event("PatientDemographics", "ADT", trigger, sender, at, **kw)

    def merged(self, sender: str, at: When, *, retired_key: str, **kw: Any) -> StreamEvent:
        """A ``PatientMerged`` (A40): this feed's patient survives ``retired_key``."""
        return self._event(
            "PatientMerged",
            "ADT",
            "A40",
            sender,
            at,
            retired_identifiers=[
                {
                    "value": retired_key,
                    "authority": None,
                    "type_code": None,
                    "valid_nhs_number": False,
                }
            ],
            retired_key=retired_key,
            **kw,
        )

    def referral(
        self,
        sender: str,
        to: str,
        at: When,
        *,
        priority: str | None = "2WW",
        referral_id: str | None = None,
        **kw: Any,
    ) -> StreamEvent:
        """A ``Referral`` (REF I12) from ``sender`` to ``to``."""
        return self._event(
            "Referral",
            "REF",
            "I12",
            sender,
            at,
            receiver=to,
            referral_id=referral_id,
            status="P",
            priority=priority,
            referral_type="MED",
            referrer=sender,
            referred_to=to,
            effective_time=london(at),
            reason=None,
            **kw,
        )

    def appointment(
        self,
        trigger: str,
        sender: str,
        at: When,
        *,
        filler_id: str = "APPT1",
        start: When | None = None,
        **kw: Any,
    ) -> StreamEvent:
        """An ``Appointment`` (S12 booked, S15 cancelled, S17 deleted, ...)."""
        actions = {
            "S12": "BOOKED",
            "S13": "RESCHEDULED",
            "S14": "MODIFIED",
            "S15": "CANCELLED",
            "S17": "DELETED",
            "S26": "NO_SHOW",
        }
        return self._event(
            "Appointment",
            "SIU",
            trigger,
            sender,
            at,
            action=actions[trigger],
            filler_appointment_id=filler_id,
            placer_appointment_id=None,
            start_time=None if start is None else london(start),
            duration_minutes=30,
            appointment_type=None,
            service=None,
            filler_status=None,
            **kw,
        )

    def order(
        self, sender: str, at: When, *, code: str = "4548-4", control: str = "NW", **kw: Any
    ) -> StreamEvent:
        """An ``Order`` (ORM O01) with one item."""
        item = {
            "order_control": control,
            "placer_order_number": "P1",
            "filler_order_number": None,
            "order_status": None,
            "test_code": code,
            "test_text": None,
            "coding_system": "LN",
        }
        return self._event("Order", "ORM", "O01", sender, at, items=[item], **kw)

    def result(
        self,
        sender: str,
        at: When,
        *,
        code: str = "4548-4",
        status: str = "F",
        observed: When | None = None,
        **kw: Any,
    ) -> StreamEvent:
        """A ``Result`` (ORU R01) with one request, observed at ``observed`` (default ``at``)."""
        request: dict[str, Any] = {
            "test_code": code,
            "test_text": None,
            "status": status,
            "observation_time": london(observed if observed is not None else at),
            "placer_order_number": None,
            "filler_order_number": None,
            "observations": [],
        }
        return self._event("Result", "ORU", "R01", sender, at, requests=[request], **kw)

    def document(
        self,
        sender: str,
        at: When,
        *,
        trigger: str = "T02",
        document_type: str = "CANCER-OUTCOME",
        **kw: Any,
    ) -> StreamEvent:
        """A ``Document`` (MDM)."""
        return self._event(
            "Document",
            "MDM",
            trigger,
            sender,
            at,
            document_type=document_type,
            document_id="DOC1",
            completion_status="AU",
            activity_time=london(at),
            **kw,
        )

    def problem(
        self, trigger: str, sender: str, at: When, *, code: str = "1403151000000103", **kw: Any
    ) -> StreamEvent:
        """A ``Problem`` (PPR PC1 added, PC2 updated, PC3 deleted)."""
        action = {"PC1": "ADDED", "PC2": "UPDATED", "PC3": "DELETED"}[trigger]
        problem = {
            "action_code": action[:2],
            "instance_id": "PRB1",
            "code": code,
            "text": None,
            "coding_system": "SCT",
        }
        return self._event(
            "Problem", "PPR", trigger, sender, at, action=action, problems=[problem], **kw
        )

    def died(
        self,
        of: StreamEvent,
        *,
        death_time: When | None = None,
        evidence: tuple[str, ...] = ("DEATH_INDICATOR",),
    ) -> StreamEvent:
        """The ``PatientDied`` event that follows the family event ``of`` (same message)."""
        header = of.record["header"]
        moment = header["event_time"] if death_time is None else london(death_time)
        record = {
            "header": {**header, "event_id": header["event_id"][::-1]},
            "patient": of.record["patient"],
            "death_time": moment,
            "evidence": list(evidence),
        }
        return StreamEvent(NS + "PatientDied", of.key, record)


def replay(
    engine: Engine,
    events: list[StreamEvent],
    *,
    until: When | None = None,
    state: PatientState | None = None,
) -> list[Alert]:
    """Run one patient's ``events`` through ``engine``, then fire deadlines up to ``until``."""
    if state is None:
        state = PatientState(events[0].key)
    alerts: list[Alert] = []
    for event in events:
        alerts.extend(engine.process(state, event))
    if until is not None:
        alerts.extend(engine.fire_due(state, london(until)))
    return alerts


def fired(alerts: list[Alert], rule: str) -> list[Alert]:
    """The alerts of one rule."""
    return [a for a in alerts if a.rule == rule]
