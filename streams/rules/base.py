"""What a rule is, and the small helpers rules share.

A rule is pure: given an event (or one of its deadlines), the patient's state as
it was before that event, and the region, it returns alerts. It never changes the
state and never reads the clock. An *event rule* sets ``on_event`` and names the
event ``schemas`` (and, to save work, the ``triggers``) it wants; a *deadline
rule* names the ``episode`` kind whose start starts its clock, the ``delay`` after
that start, and ``on_deadline``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streams.alert import Alert
from streams.deadlines import Deadline
from streams.region import Region
from streams.state import PatientState
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


def care_team(state: PatientState, view: EventView) -> set[str]:
    """The care team at the moment of ``view``: the sender of the message included."""
    team = set(state.care_team(view.time))
    if view.sender:
        team.add(view.sender)
    return team


def of_kinds(providers: Iterable[str], region: Region, kinds: frozenset[str]) -> list[str]:
    """The providers among ``providers`` whose kind is in ``kinds``."""
    return [p for p in providers if region.kind(p) in kinds]


COMMUNITY_KINDS = frozenset({"gp", "hospice", "community"})
