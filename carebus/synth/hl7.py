"""Render a journey's message records as HL7 v2.4 in the NHS ITK style.

Segments end with CR. The NHS number is the PID-3 repetition with authority
``NHS`` and type ``NH``, followed by the provider's hospital number (type ``MR``);
PID-32 carries the NHS number verification status; PD1 names the registered
practice and GP. Hospital systems stamp times with a UTC offset, the others send
Europe/London local time without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from carebus.synth.messages import (
    Adt,
    Booking,
    Letter,
    Merge,
    Order,
    Referral,
    RegisterEntry,
    Result,
    Spec,
)
from carebus.synth.people import Person
from carebus.synth.region import Provider

LONDON = ZoneInfo("Europe/London")
RECEIVING_APPLICATION = "CAREBUS"
#: MSH-6 of everything but referrals: the regional integration hub.
HUB = "XRHUB"

#: PID-32 NHS number status (NHS data dictionary).
VERIFIED = "01"
NOT_TRACED = "02"
TRACE_REQUIRED = "03"

#: Ways :func:`render` can break a message on purpose, each one a message the
#: bus must reject (dead-letter, answer AR) rather than translate.
MALFORMED = ("missing-pid", "no-identifier", "truncated", "no-message-type")

_STRUCTURES = {
    "A01": "ADT_A01",
    "A03": "ADT_A03",
    "A04": "ADT_A01",
    "A08": "ADT_A01",
    "A28": "ADT_A05",
    "A40": "ADT_A39",
}
_BOOKING_REASONS = {
    "S12": ("NEW", "Booked"),
    "S13": ("RESCHEDULE", "Booked"),
    "S15": ("CANCEL", "Cancelled"),
    "S26": ("NOSHOW", "Noshow"),
}
_DOCUMENT_TITLES = {
    "CANCER-OUTCOME": "Cancer referral outcome",
    "CLINIC-LETTER": "Clinic letter",
}
_APPLICATIONS = {"gp": "GPSYS", "hospice": "HOSPICEPAS", "community": "COMMSYS"}


@dataclass(frozen=True, slots=True)
class _Patient:
    identity: Identity
    moved: bool


@dataclass(frozen=True, slots=True)
class Identity:
    """How one provider's system identifies the patient: the NHS number it holds
    (``None`` when it has none, possibly mistyped) and its PID-32 status."""

    nhs_number: str | None
    status: str = VERIFIED


def render(
    spec: Spec,
    person: Person,
    *,
    control_id: str,
    sent: datetime,
    identity: Identity,
    moved: bool = False,
    malformed: str | None = None,
) -> bytes:
    """The HL7 v2.4 message for ``spec``, stamped ``sent``, as bytes ending in CR.

    ``moved`` gives the patient's new address; ``malformed`` (one of
    :data:`MALFORMED`) breaks the message on purpose.
    """
    provider = spec.provider
    segments = _body(spec, person, _Patient(identity, moved), sent)
    message_type = _message_type(spec)
    if malformed == "no-message-type":
        message_type = ""
    msh = _msh(
        {
            3: _application(spec),
            4: provider.code,
            5: RECEIVING_APPLICATION,
            6: spec.to.code if isinstance(spec, Referral) else HUB,
            7: ts(sent, provider),
            9: message_type,
            10: control_id,
            11: "P",
            12: "2.4",
            15: "AL",
            16: "NE",
            17: "GBR",
        }
    )
    if malformed in ("missing-pid", "no-identifier"):
        drop = ("PID", "PD1") if malformed == "missing-pid" else ()
        segments = [
            _empty_pid(s) if malformed == "no-identifier" and s.startswith("PID|") else s
            for s in segments
            if s[:3] not in drop
        ]
    text = "\r".join([msh, *segments]) + "\r"
    if malformed == "truncated":
        text = text[: len(msh) + 6] + "\r"
    return text.encode("ascii")


def ts(moment: datetime, provider: Provider) -> str:
    """An HL7 TS in Europe/London time, with its UTC offset when the provider sends one."""
    local = moment.astimezone(LONDON)
    if provider.offsets:
        return local.strftime("%Y%m%d%H%M%S%z")
    return local.strftime("%Y%m%d%H%M%S")


def escape(text: str) -> str:
    """``text`` with the HL7 delimiters escaped."""
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("~", "\\R\\")
        .replace("&", "\\T\\")
    )


def _segment(name: str, fields: dict[int, str]) -> str:
    values = [""] * (max(fields) if fields else 0)
    for index, value in fields.items():
        values[index - 1] = value
    return "|".join([name, *values])


def _msh(fields: dict[int, str]) -> str:
    """MSH with fields numbered as the standard does (MSH-1 is the field separator)."""
    return _segment("MSH", {1: "^~\\&"} | {n - 1: v for n, v in fields.items()})


def _message_type(spec: Spec) -> str:
    match spec:
        case Adt(trigger=trigger):
            return f"ADT^{trigger}^{_STRUCTURES[trigger]}"
        case Merge():
            return "ADT^A40^ADT_A39"
        case Referral():
            return "REF^I12^REF_I12"
        case Booking(trigger=trigger):
            return f"SIU^{trigger}^SIU_S12"
        case Order(provider=provider):
            if provider.order_message == "OML":
                return "OML^O21^OML_O21"
            return "ORM^O01^ORM_O01"
        case Result():
            return "ORU^R01^ORU_R01"
        case Letter():
            return "MDM^T02^MDM_T02"
        case RegisterEntry(trigger=trigger):
            return f"PPR^{trigger}^PPR_PC1"


def _application(spec: Spec) -> str:
    kind = spec.provider.kind
    if kind == "council":
        return "CARESYS"
    if kind != "hospital":
        return _APPLICATIONS.get(kind, "EPR")
    match spec:
        case Order(test=test) | Result(test=test):
            return "RIS" if test.system == "L" else "LIMS"
        case Letter():
            return "EPR"
        case _:
            return "PAS"


def _body(spec: Spec, person: Person, patient: _Patient, sent: datetime) -> list[str]:
    p = spec.provider
    match spec:
        case Adt(temporary_id=temporary) if temporary:
            return [
                _evn(spec.trigger, sent, spec.time, p),
                _segment(
                    "PID",
                    {
                        1: "1",
                        3: f"{temporary}^^^{p.code}^MR",
                        5: "UNKNOWN^PATIENT",
                        8: "U",
                        32: TRACE_REQUIRED,
                    },
                ),
                _pv1_adt(spec),
            ]
        case Adt():
            return [
                _evn(spec.trigger, sent, spec.time, p),
                _pid(person, p, patient, spec.death_time, spec.death_indicator),
                _pd1(person),
                _pv1_adt(spec),
            ]
        case Merge():
            return [
                _evn("A40", sent, spec.time, p),
                _pid(person, p, patient),
                _pd1(person),
                _segment("MRG", {1: f"{spec.retired_mrn}^^^{p.code}^MR"}),
            ]
        case Referral():
            return _referral(spec, person, patient)
        case Booking():
            return _booking(spec, person, patient)
        case Order():
            return _order(spec, person, patient)
        case Result():
            return _result(spec, person, patient)
        case Letter():
            return _letter(spec, person, patient, sent)
        case RegisterEntry():
            return [
                _pid(person, p, patient),
                _pd1(person),
                _segment("PV1", {1: "1", 2: "N"}),
                _segment(
                    "PRB",
                    {
                        1: "AD" if spec.trigger == "PC1" else "DE",
                        2: ts(spec.time, p),
                        3: f"{spec.code}^{escape(spec.text)}^SCT",
                        4: f"{spec.instance_id}^{p.code}",
                        7: ts(spec.time, p),
                    },
                ),
            ]


def _evn(trigger: str, sent: datetime, occurred: datetime, provider: Provider) -> str:
    return _segment("EVN", {1: trigger, 2: ts(sent, provider), 6: ts(occurred, provider)})


def _pid(
    person: Person,
    provider: Provider,
    patient: _Patient,
    death_time: datetime | None = None,
    death_indicator: bool = False,
) -> str:
    identity = patient.identity
    ids = [f"{person.mrn(provider)}^^^{provider.code}^MR"]
    if identity.nhs_number is not None:
        ids.insert(0, f"{identity.nhs_number}^^^NHS^NH")
    title = "MRS" if person.sex == "F" else "MR"
    street = person.address.street
    if patient.moved:
        street = f"FLAT {person.index % 9 + 1}, {street}"
    fields = {
        1: "1",
        3: "~".join(ids),
        5: f"{person.family}^{person.given}^^^{title}^^L",
        7: _date(person.birth_date),
        8: person.sex,
        11: f"{escape(street)}^^{person.address.town}^^{person.address.postcode}^GBR^H",
        13: f"{person.phone}^PRN^PH",
        32: identity.status,
    }
    if death_time is not None:
        fields[29] = ts(death_time, provider)
    if death_indicator:
        fields[30] = "Y"
    return _segment("PID", fields)


def _empty_pid(pid: str) -> str:
    fields = pid.split("|")
    fields[3] = ""
    return "|".join(fields)


def _pd1(person: Person) -> str:
    practice = person.practice
    return _segment(
        "PD1",
        {
            3: f"{escape(practice.name)}^^{practice.code}",
            4: f"{person.gp_code}^PRACTITIONER^{_initial(person)}^^^DR",
        },
    )


def _pv1_adt(spec: Adt) -> str:
    p = spec.provider
    fields = {1: "1", 2: spec.patient_class}
    if spec.location:
        fields[3] = f"{spec.location}^^^{p.code}"
    if spec.admission_type:
        fields[4] = spec.admission_type
    if spec.visit:
        fields[19] = f"{spec.visit}^^^{p.code}^VN"
    if spec.discharge_destination:
        fields[36] = "4" if spec.discharge_destination == "79" else "1"
        fields[37] = spec.discharge_destination
    if spec.admit_time is not None:
        fields[44] = ts(spec.admit_time, p)
    if spec.discharge_time is not None:
        fields[45] = ts(spec.discharge_time, p)
    return _segment("PV1", fields)


def _referral(spec: Referral, person: Person, patient: _Patient) -> list[str]:
    p = spec.provider
    priority = {"2WW": "2WW^Two week wait", "U": "U^Urgent"}.get(spec.priority, "R^Routine")
    return [
        _segment(
            "RF1",
            {
                1: "P^Pending",
                2: priority,
                3: "ONC^Oncology" if spec.priority == "2WW" else "MED^Medical",
                6: f"{spec.referral_id}^{p.code}",
                7: ts(spec.time, p),
                10: escape(spec.reason),
                11: f"{spec.referral_id}^ERS",
            },
        ),
        _segment("PRD", {1: "RP", 2: f"PRACTITIONER^{_initial(person)}", 7: f"{p.code}^ODS"}),
        _segment("PRD", {1: "RT", 2: "CONSULTANT^ON CALL", 7: f"{spec.to.code}^ODS"}),
        _pid(person, p, patient),
    ]


def _booking(spec: Booking, person: Person, patient: _Patient) -> list[str]:
    p = spec.provider
    reason, status = _BOOKING_REASONS[spec.trigger]
    code, _, text = spec.clinic.partition("^")
    start = ts(spec.start, p)
    return [
        _segment(
            "SCH",
            {
                1: f"P{spec.appointment_id}",
                2: f"{spec.appointment_id}^{p.code}",
                6: reason,
                7: escape(text),
                9: str(spec.minutes),
                10: "MIN",
                11: f"^^{spec.minutes}^{start}",
                25: status,
            },
        ),
        _pid(person, p, patient),
        _pd1(person),
        _segment("RGS", {1: "1"}),
        _segment(
            "AIS",
            {1: "1", 3: f"{code}^{escape(text)}", 4: start, 7: str(spec.minutes), 8: "MIN"},
        ),
        _segment("AIL", {1: "1", 3: f"{code}^^^{p.code}"}),
    ]


def _order(spec: Order, person: Person, patient: _Patient) -> list[str]:
    p = spec.provider
    test = spec.test
    placer = f"{spec.order_id}^{p.code}"
    segments = [
        _pid(person, p, patient),
        _pd1(person),
        _segment("PV1", {1: "1", 2: "O"}),
        _segment("ORC", {1: "NW", 2: placer, 5: "SC", 9: ts(spec.time, p)}),
        _segment(
            "OBR",
            {
                1: "1",
                2: placer,
                4: f"{test.code}^{escape(test.text)}^{test.system}",
                7: ts(spec.time, p),
                16: f"{person.gp_code}^PRACTITIONER" if p.kind == "gp" else "C9000001^CONSULTANT",
            },
        ),
    ]
    return segments


def _result(spec: Result, person: Person, patient: _Patient) -> list[str]:
    p = spec.provider
    test = spec.test
    placer = f"{spec.order_id}^{(spec.placer or p).code}"
    filler = f"F{spec.order_id}^{p.code}"
    if test.numeric:
        obx = {
            1: "1",
            2: "NM",
            3: f"{test.code}^{escape(test.text)}^{test.system}",
            5: spec.value,
            6: test.units,
            7: f"{test.low:g}-{test.high:g}",
            8: "H" if spec.abnormal else "N",
            11: spec.status,
            14: ts(spec.observed, p),
        }
    else:
        obx = {
            1: "1",
            2: "TX",
            3: f"{test.code}^{escape(test.text)}^{test.system}",
            5: escape(spec.value),
            11: spec.status,
            14: ts(spec.observed, p),
        }
    return [
        _pid(person, p, patient),
        _pd1(person),
        _segment("PV1", {1: "1", 2: "O"}),
        _segment("ORC", {1: "RE", 2: placer, 3: filler, 5: "CM"}),
        _segment(
            "OBR",
            {
                1: "1",
                2: placer,
                3: filler,
                4: f"{test.code}^{escape(test.text)}^{test.system}",
                7: ts(spec.observed, p),
                22: ts(spec.time, p),
                25: spec.status,
            },
        ),
        _segment("OBX", obx),
    ]


def _letter(spec: Letter, person: Person, patient: _Patient, sent: datetime) -> list[str]:
    p = spec.provider
    return [
        _evn("T02", sent, spec.time, p),
        _pid(person, p, patient),
        _pd1(person),
        _segment("PV1", {1: "1", 2: "O"}),
        _segment(
            "TXA",
            {
                1: "1",
                2: f"{spec.document_type}^{_DOCUMENT_TITLES.get(spec.document_type, 'Letter')}",
                3: "TX",
                4: ts(spec.time, p),
                6: ts(spec.time, p),
                12: f"{spec.document_id}^{p.code}",
                17: "AU",
                19: "AV",
            },
        ),
        _segment(
            "OBX",
            {1: "1", 2: "TX", 3: f"{spec.document_type}^Letter", 5: escape(spec.text), 11: "F"},
        ),
    ]


def _initial(person: Person) -> str:
    return "ABCDEFGHJK"[int(person.gp_code[-1])]


def _date(day: date) -> str:
    return day.strftime("%Y%m%d")
