"""What a rule is, and the small helpers rules share.

A rule is pure: given an event (or one of its deadlines), the patient's state as
it was before that event, and the region, it returns alerts. It never changes the
state and never reads the clock. An *event rule* sets ``on_event`` and names the
event ``schemas`` (and, to save work, the ``triggers``) it wants: the engine only
calls it for those. A *deadline rule* names the ``episode`` kind whose start
starts its clock, the ``delay`` after that start, and ``on_deadline``.

The four clocks of the suspected-cancer pathway differ only in their delay, what
meets them, whom they tell and their summary: :func:`pathway_clock` builds each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streams.alert import Alert
from streams.deadlines import Deadline
from streams.observe import PATHWAY
from streams.region import Region
from streams.state import Pathway, PatientState
from streams.view import EventView

OnEvent = Callable[[EventView, PatientState, Region], list[Alert]]
OnDeadline = Callable[[Deadline, PatientState, Region], list[Alert]]


@dataclass(frozen=True)
class Rule:
    """One coordination rule of the spec."""

    id: str
    schemas: frozenset[str] = frozenset()
    on_event: OnEvent | None = None
    #: the trigger events (MSH-9.2) ``on_event`` can react to; None for any
    triggers: frozenset[str] | None = None
    episode: str | None = None
    delay: int = 0
    on_deadline: OnDeadline | None = None


def message_key(rule: str, state: PatientState, view: EventView, *extra: str) -> str:
    """The dedup key of an alert caused by one message: rule, patient, sender, MSH-10."""
    key = f"{rule}:{state.key}:{view.ref}"
    return ":".join((key, *extra)) if extra else key


def episode_key(rule: str, state: PatientState, sender: str, control_id: str) -> str:
    """The dedup key of a deadline alert: rule, patient, and the message that started it."""
    return f"{rule}:{state.key}:{sender}:{control_id}"


def message_alert(
    rule: str,
    state: PatientState,
    view: EventView,
    *,
    recipients: Iterable[str],
    summary: str,
    evidence: Iterable[str] = (),
    key: str | None = None,
) -> Alert:
    """An alert caused by the message of ``view``, raised at its event time.

    Its sender is told when ``recipients`` name nobody; ``evidence`` follows the
    message's own control id; ``key`` defaults to :func:`message_key`.
    """
    return Alert.create(
        rule=rule,
        patient=state.key,
        raised_at=view.event_time,
        recipients=recipients,
        fallback=view.sender,
        dedup_key=message_key(rule, state, view) if key is None else key,
        evidence=(view.control_id, *evidence),
        summary=summary,
    )


def care_team(state: PatientState, view: EventView) -> set[str]:
    """The care team at the moment of ``view``: the sender of the message included.

    By event time: a provider whose messages are all stamped after ``view`` is not in
    it, even when they arrived first.
    """
    team = set(state.care_team(view.time))
    if view.sender:
        team.add(view.sender)
    return team


def of_kinds(providers: Iterable[str], region: Region, kinds: frozenset[str]) -> list[str]:
    """The providers among ``providers`` whose kind is in ``kinds``."""
    return [p for p in providers if region.kind(p) in kinds]


COMMUNITY_KINDS = frozenset({"gp", "hospice", "community"})


def pathway_clock(
    rule: str,
    *,
    delay: int,
    met: Callable[[Pathway], bool] | None,
    tell_referrer: bool,
    summary: str,
) -> Rule:
    """One clock of the suspected-cancer pathway, running ``delay`` from the referral.

    When it runs out, a pathway still open (no outcome document, no death) that
    ``met`` does not say was met alerts its hospital H (``MSH-6.1`` of the referral)
    and, when ``tell_referrer``, the referrer R, at the deadline. The dedup key and
    the evidence name the referral; the referrer is told when nobody else is.
    """

    def fire(deadline: Deadline, state: PatientState, region: Region) -> list[Alert]:
        """Alert when the pathway of ``deadline`` is still open and its clock unmet."""
        pathway = state.pathways.get(deadline.ref)
        if pathway is None or (met is not None and met(pathway)):
            return []
        return [
            Alert.create(
                rule=rule,
                patient=state.key,
                raised_at=deadline.due,
                recipients=(pathway.hospital, pathway.referrer)
                if tell_referrer
                else (pathway.hospital,),
                fallback=pathway.referrer,
                dedup_key=episode_key(rule, state, pathway.referrer, pathway.control_id),
                evidence=(pathway.control_id,),
                summary=summary,
            )
        ]

    return Rule(id=rule, episode=PATHWAY, delay=delay, on_deadline=fire)
