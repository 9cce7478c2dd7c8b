"""Record what one event tells about a patient into their :class:`PatientState`.

This is the only place that writes facts into state; rules read them. The engine
runs the rules on the state *before* an event and calls :func:`observe` after, so
"previous" and "first" in the rules spec mean "before this message".

:func:`observe` returns the episode the event opened, if any (a suspected-cancer
pathway or a discharge to a hospice; one event opens at most one) so the engine
can start its rules' clocks. Every clock starts at the event time of the message
that opens the episode.

Look-back history is recorded by event time, whatever the arrival order (see
:mod:`streams.state`): a message that arrives before earlier-stamped ones is kept
at its own event time, so it does not count in their windows.
"""

from __future__ import annotations

from bisect import insort
from typing import Final, NamedTuple

from streams.deadlines import DAY, to_micros
from streams.region import Region
from streams.state import (
    LATE,
    Appointment,
    Death,
    Discharge,
    FinalResult,
    Pathway,
    PatientState,
    remember_contact,
)
from streams.view import (
    APPOINTMENT,
    DIED,
    DOCUMENT,
    ENCOUNTER,
    PROBLEM,
    REFERRAL,
    RESULT,
    EventView,
)

PATHWAY: Final = "pathway"
DISCHARGE: Final = "discharge"

#: the window of repeated-emergency-admissions
EMERGENCY_WINDOW: Final = 90 * DAY
#: emergency admissions this much older than the latest one are forgotten
EMERGENCY_MEMORY: Final = EMERGENCY_WINDOW + LATE
#: appointments that started longer ago than this are forgotten
APPOINTMENT_MEMORY: Final = 365 * DAY


class Opened(NamedTuple):
    """An episode opened by an event: its kind, reference and start time."""

    kind: str
    ref: str
    start: int


def observe(view: EventView, state: PatientState, region: Region) -> Opened | None:
    """Apply ``view`` to ``state``; return the episode it opened, if any."""
    t = view.time
    sender = view.sender
    if sender:
        times = state.seen.get(sender)
        if times is None:
            state.seen[sender] = [t]
        elif t != times[-1]:
            remember_contact(times, t)
    handler = _HANDLERS.get(view.schema)
    if handler is None:
        return None
    return handler(view, state, region)


def _encounter(view: EventView, state: PatientState, region: Region) -> Opened | None:
    trigger = view.trigger
    record = view.record
    t = view.time
    if trigger in ("A01", "A04"):
        for pathway in state.pathways.values():
            if pathway.hospital == view.sender and t >= pathway.start:
                pathway.seen = True
    if trigger == "A01":
        if record.get("admission_type") in region.emergency_admission_types:
            emergencies = state.emergencies
            emergencies[view.ref] = (t, view.control_id)
            since = max(at for at, _ in emergencies.values()) - EMERGENCY_MEMORY
            for ref in [r for r, (at, _) in emergencies.items() if at < since]:
                del emergencies[ref]
        if state.discharges and region.kind(view.sender) == "hospice":
            for ref, discharge in list(state.discharges.items()):
                if discharge.start <= t <= discharge.start + DAY:
                    state.close_episode(ref)
        return None
    if (
        trigger == "A03"
        and record.get("discharge_destination") in region.hospice_discharge_destinations
        and region.kind(view.sender) == "hospital"
    ):
        ref = f"{DISCHARGE}:{view.sender}:{record.get('visit_number') or view.control_id}"
        if ref in state.closed or ref in state.discharges:
            return None
        state.discharges[ref] = Discharge(start=t, hospital=view.sender, control_id=view.control_id)
        return Opened(DISCHARGE, ref, t)
    return None


def _referral(view: EventView, state: PatientState, region: Region) -> Opened | None:
    record = view.record
    t = view.time
    to = record.get("referred_to") or view.receiver
    if to:
        times = state.referred.get(to)
        if times is None:
            state.referred[to] = [t]
        else:
            remember_contact(times, t)
    if record.get("priority") not in region.cancer_priorities or state.death is not None:
        return None
    referrer = record.get("referrer") or view.sender
    ref = f"{PATHWAY}:{referrer}:{record.get('referral_id') or view.control_id}"
    if ref in state.closed or ref in state.pathways:
        return None
    state.pathways[ref] = Pathway(
        start=t, hospital=to, referrer=referrer, control_id=view.control_id
    )
    return Opened(PATHWAY, ref, t)


def _appointment(view: EventView, state: PatientState, region: Region) -> Opened | None:
    record = view.record
    trigger = view.trigger
    filler_id = record.get("filler_appointment_id") or ""
    start_time = record.get("start_time")
    t = view.time
    if trigger == "S12":
        for pathway in state.pathways.values():
            if pathway.hospital == view.sender and t >= pathway.start:
                pathway.booked = True
        if filler_id and start_time is not None:
            state.appointments[filler_id] = Appointment(
                provider=view.sender,
                start=to_micros(start_time),
                control_id=view.control_id,
            )
            since = t - APPOINTMENT_MEMORY
            for key in [k for k, a in state.appointments.items() if a.start < since]:
                del state.appointments[key]
    elif trigger in ("S15", "S17"):
        state.appointments.pop(filler_id, None)
    elif trigger in ("S13", "S14") and start_time is not None:
        held = state.appointments.get(filler_id)
        if held is not None:
            held.start = to_micros(start_time)
    return None


def _result(view: EventView, state: PatientState, region: Region) -> Opened | None:
    intervals = region.retest_intervals_days
    for request in view.record.get("requests") or ():
        code = request.get("test_code")
        if request.get("status") != "F" or code not in intervals:
            continue
        observed = request.get("observation_time")
        at = view.time if observed is None else to_micros(observed)
        held = state.results.setdefault(code, {}).setdefault(view.sender, [])
        result = FinalResult(time=at, control_id=view.control_id, reported=view.time)
        if result in held:
            continue
        insort(held, result, key=FinalResult.key)
        horizon = held[-1].time - intervals[code] * DAY - LATE
        if held[0].time < horizon:
            del held[: sum(1 for r in held if r.time < horizon)]
    return None


def _document(view: EventView, state: PatientState, region: Region) -> Opened | None:
    if (
        view.trigger == "T02"
        and state.pathways
        and view.record.get("document_type") in region.outcome_document_types
    ):
        for ref in list(state.pathways):
            state.close_episode(ref)
    return None


def _problem(view: EventView, state: PatientState, region: Region) -> Opened | None:
    codes = region.eol_register_codes
    if not any(p.get("code") in codes for p in view.record.get("problems") or ()):
        return None
    if view.trigger in ("PC1", "PC2"):
        state.eol, state.eol_changed = True, view.time
    elif view.trigger == "PC3":
        state.eol, state.eol_changed = False, view.time
    return None


def _died(view: EventView, state: PatientState, region: Region) -> Opened | None:
    if state.death is not None:
        return None
    died = view.record.get("death_time")
    state.death = Death(
        time=view.time if died is None else to_micros(died),
        event_time=view.time,
        sender=view.sender,
        control_id=view.control_id,
    )
    for ref in list(state.pathways) + list(state.discharges):
        state.close_episode(ref)
    state.appointments.clear()
    return None


_HANDLERS = {
    ENCOUNTER: _encounter,
    REFERRAL: _referral,
    APPOINTMENT: _appointment,
    RESULT: _result,
    DOCUMENT: _document,
    PROBLEM: _problem,
    DIED: _died,
}
