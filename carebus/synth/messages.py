"""What a journey sends: one small record per message, rendered to HL7 later.

Times are timezone-aware. ``time`` is when the thing happened (EVN-6 where the
message has an EVN segment); the message itself is stamped with the time it is
sent (MSH-7, EVN-2), which the feed keeps beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from carebus.synth.region import Provider


@dataclass(frozen=True, slots=True)
class Test:
    """A test from the catalogue: code, name, coding system and a result range."""

    code: str
    text: str
    system: str
    units: str = ""
    low: float = 0.0
    high: float = 0.0

    @property
    def numeric(self) -> bool:
        """True when results are numbers with a reference range."""
        return bool(self.units)


TESTS = {
    "HBA1C": Test("4548-4", "Haemoglobin A1c", "LN", "%", 4.0, 6.0),
    "PSA": Test("2857-1", "Prostate specific antigen", "LN", "ug/L", 0.0, 4.0),
    "CEA": Test("2039-6", "Carcinoembryonic antigen", "LN", "ug/L", 0.0, 5.0),
    "CA125": Test("10334-1", "Cancer antigen 125", "LN", "kU/L", 0.0, 35.0),
    "HB": Test("718-7", "Haemoglobin", "LN", "g/L", 115.0, 165.0),
    "CT": Test("XCTCAP", "CT chest abdomen and pelvis", "L"),
}


@dataclass(frozen=True, slots=True)
class Adt:
    """``ADT^A01/A03/A04/A08/A28``: an admission, discharge, attendance or update."""

    trigger: str
    provider: Provider
    time: datetime
    patient_class: str = "O"
    location: str = ""
    visit: str = ""
    admission_type: str = ""
    admit_time: datetime | None = None
    discharge_time: datetime | None = None
    discharge_destination: str = ""
    death_time: datetime | None = None
    death_indicator: bool = False
    #: A temporary hospital number used before the patient was identified.
    temporary_id: str = ""


@dataclass(frozen=True, slots=True)
class Merge:
    """``ADT^A40``: a temporary hospital number merged into the patient's record."""

    provider: Provider
    time: datetime
    retired_mrn: str


@dataclass(frozen=True, slots=True)
class Referral:
    """``REF^I12``: a referral from a practice to a hospital."""

    provider: Provider
    to: Provider
    time: datetime
    referral_id: str
    priority: str
    reason: str


@dataclass(frozen=True, slots=True)
class Booking:
    """``SIU^S12/S13/S15/S26``: an appointment booked, moved, cancelled or missed."""

    trigger: str
    provider: Provider
    time: datetime
    appointment_id: str
    start: datetime
    clinic: str
    minutes: int = 30


@dataclass(frozen=True, slots=True)
class Order:
    """``ORM^O01`` or ``OML^O21`` (as the provider's system sends) for one test."""

    provider: Provider
    time: datetime
    order_id: str
    test: Test


@dataclass(frozen=True, slots=True)
class Result:
    """``ORU^R01``: the result of an order, preliminary (``P``) or final (``F``)."""

    provider: Provider
    time: datetime
    order_id: str
    test: Test
    observed: datetime
    status: str
    value: str
    abnormal: bool = False
    #: The provider that placed the order, when not the lab that reports it.
    placer: Provider | None = None


@dataclass(frozen=True, slots=True)
class Letter:
    """``MDM^T02``: a clinic letter, here the outcome of a cancer referral."""

    provider: Provider
    time: datetime
    document_id: str
    document_type: str
    text: str


@dataclass(frozen=True, slots=True)
class RegisterEntry:
    """``PPR^PC1`` (added) or ``PPR^PC3`` (removed): a problem-list entry."""

    trigger: str
    provider: Provider
    time: datetime
    instance_id: str
    code: str
    text: str


Spec = Adt | Merge | Referral | Booking | Order | Result | Letter | RegisterEntry
