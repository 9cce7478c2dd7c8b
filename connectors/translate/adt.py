"""ADT: encounters (A01-A05, A11-A13), demographics (A08, A28, A31), merges (A40)."""

from __future__ import annotations

from typing import Any

from carebus.errors import MissingRequiredField
from connectors.hl7 import Layout, Message, Segment
from connectors.translate.common import (
    Context,
    Draft,
    as_time,
    component_texts,
    identifiers,
    require_segment,
)

ENCOUNTER = "carebus.events.Encounter"
PATIENT_DEMOGRAPHICS = "carebus.events.PatientDemographics"
PATIENT_MERGED = "carebus.events.PatientMerged"

ENCOUNTER_KINDS = {
    "A01": "ADMITTED",
    "A02": "TRANSFERRED",
    "A03": "DISCHARGED",
    "A04": "REGISTERED",
    "A05": "PRE_ADMITTED",
    "A11": "ADMISSION_CANCELLED",
    "A12": "TRANSFER_CANCELLED",
    "A13": "DISCHARGE_CANCELLED",
}


#: PV1-2 (patient class), 4 (admission type), 19 (visit number), 36 (discharge
#: disposition), 37 (discharge destination), 44 and 45 (admit and discharge times),
#: then PV1-3.1 to 3.4 (location) and PV1-6.1 to 6.4 (prior location).
PV1 = Layout((2, 4, 19, 36, 37, 44, 45), ((3, 4), (6, 4)), null_as_empty=True)


def encounter(message: Message, ctx: Context) -> list[Draft]:
    """One ``Encounter`` from PID and PV1."""
    pid = require_segment(message, "PID", ctx)
    (
        patient_class,
        admission_type,
        visit,
        disposition,
        destination,
        admitted,
        discharged,
        *places,
    ) = message.read("PV1", PV1)
    fields: dict[str, Any] = {
        "kind": ENCOUNTER_KINDS[ctx.trigger_event],
        "visit_number": visit or None,
        "patient_class": patient_class or None,
        "admission_type": admission_type or None,
        "location": _location(*places[:4]),
        "prior_location": _location(*places[4:]),
        "discharge_disposition": disposition or None,
        "discharge_destination": destination or None,
        "admit_time": as_time(admitted),
        "discharge_time": as_time(discharged),
    }
    return [Draft(ENCOUNTER, pid, fields, message.first("PD1"))]


def demographics(message: Message, ctx: Context) -> list[Draft]:
    """One ``PatientDemographics`` from PID and PD1."""
    pid = require_segment(message, "PID", ctx)
    return [Draft(PATIENT_DEMOGRAPHICS, pid, {}, message.first("PD1"))]


def merge(message: Message, ctx: Context) -> list[Draft]:
    """One ``PatientMerged`` per PID/MRG group: PID-3 survives, MRG-1 is retired."""
    groups: list[dict[str, Segment]] = []
    for segment in message.segments:
        if segment.name == "PID":
            groups.append({"PID": segment})
        elif segment.name in ("PD1", "MRG") and groups and segment.name not in groups[-1]:
            groups[-1][segment.name] = segment
    if not groups:
        require_segment(message, "PID", ctx)
    drafts = []
    for group in groups:
        mrg = group.get("MRG")
        if mrg is None:
            raise MissingRequiredField(
                "ADT^A40 patient group has no MRG segment", control_id=ctx.control_id, field="MRG"
            )
        retired, retired_key, _ = identifiers(mrg, 1, "MRG-1", ctx)
        fields = {"retired_identifiers": retired, "retired_key": retired_key}
        drafts.append(Draft(PATIENT_MERGED, group["PID"], fields, group.get("PD1")))
    return drafts


def location(segment: Segment | None, field: int) -> dict[str, Any] | None:
    """A PL field as a ``carebus.events.Location``, or None when empty."""
    if segment is None:
        return None
    return _location(*component_texts(segment, field, 4))


def _location(point_of_care: str, room: str, bed: str, facility: str) -> dict[str, Any] | None:
    """:func:`location` given PL.1 to PL.4 as read by :func:`component_texts`."""
    if not (point_of_care or room or bed or facility):
        return None
    return {
        "point_of_care": point_of_care or None,
        "room": room or None,
        "bed": bed or None,
        "facility": facility or None,
    }
