"""The rule engine: one patient's state, one event (or one moment) at a time.

For each event the engine fires the patient's deadlines due strictly before the
event time, runs the event rules on the state as it was before the event, records
the event's facts (:func:`streams.observe.observe`), starts the clocks of any
episode the event opened, and drops alerts whose ``dedup_key`` was raised before.
Pure apart from changing the state it is given: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final

from streams.alert import Alert
from streams.deadlines import Deadline, from_micros, to_micros
from streams.observe import observe
from streams.region import Region
from streams.rules import RULES
from streams.rules.base import OnEvent, Rule
from streams.state import PatientState
from streams.view import EventLike, EventView

#: checks run for a schema: by trigger event (MSH-9.2), and for any other trigger
Dispatch = tuple[dict[str, tuple[OnEvent, ...]], tuple[OnEvent, ...]]

_NO_CHECKS: Final[Dispatch] = ({}, ())


class Engine:
    """Runs the rules of ``rules`` (default: all fourteen) for ``region``."""

    def __init__(self, region: Region, rules: Iterable[Rule] = RULES) -> None:
        self.region = region
        self.rules = tuple(rules)
        ids = [r.id for r in self.rules]
        if len(set(ids)) != len(ids):
            raise ValueError("rule ids must be unique")
        #: schema -> the event checks that want it, built once from the declarations
        self._dispatch = _dispatch_table(self.rules)
        self._deadline_rules = {r.id: r for r in self.rules if r.on_deadline is not None}
        #: episode kind -> (rule id, delay) of the clocks its start starts
        self._clocks: dict[str, tuple[tuple[str, int], ...]] = {}
        for rule in self._deadline_rules.values():
            if rule.episode is not None:
                clock = (rule.id, rule.delay)
                self._clocks[rule.episode] = (*self._clocks.get(rule.episode, ()), clock)

    # -- the contract of docs/architecture.md -------------------------------------

    def process(self, state: PatientState, event: EventLike) -> list[Alert]:
        """Apply one event to ``state``; return the new alerts, in the order raised."""
        return self.process_view(state, EventView.of(event))

    def fire_due(self, state: PatientState, now: datetime) -> list[Alert]:
        """Fire the deadlines due at or before ``now``, earliest first."""
        return self.fire_due_micros(state, to_micros(now))

    def next_deadline(self, state: PatientState) -> datetime | None:
        """When the earliest pending deadline of ``state`` falls due, or None."""
        due = state.next_deadline()
        return None if due is None else from_micros(due)

    def absorb(self, survivor: PatientState, retired: PatientState) -> None:
        """Merge: ``survivor`` takes over everything known under ``retired``."""
        survivor.absorb(retired)

    # -- the same in epoch microseconds, for drivers that keep their own clock ----

    def process_view(self, state: PatientState, view: EventView) -> list[Alert]:
        """:meth:`process` for an event already wrapped in an :class:`EventView`."""
        deadlines = state.deadlines
        if deadlines and deadlines[0].due < view.time:
            alerts = self.fire_due_micros(state, view.time - 1)
        else:
            alerts = []
        region = self.region
        by_trigger, other = self._dispatch.get(view.schema, _NO_CHECKS)
        for check in by_trigger.get(view.trigger, other):
            raised = check(view, state, region)
            if raised:
                alerts.extend(_keep_new(state, raised))
        opened = observe(view, state, region)
        if opened is not None:
            for rule, delay in self._clocks.get(opened.kind, ()):
                state.add_deadline(Deadline(opened.start + delay, rule, opened.ref))
        return alerts

    def fire_due_micros(self, state: PatientState, now: int) -> list[Alert]:
        """:meth:`fire_due` with ``now`` in epoch microseconds."""
        if not state.deadlines or state.deadlines[0].due > now:
            return []
        alerts: list[Alert] = []
        for deadline in state.pop_due(now):
            rule = self._deadline_rules.get(deadline.rule)
            if rule is not None and rule.on_deadline is not None:
                raised = rule.on_deadline(deadline, state, self.region)
                if raised:
                    alerts.extend(_keep_new(state, raised))
            if deadline.ref in state.discharges and not state.has_deadlines(deadline.ref):
                state.close_episode(deadline.ref)
        return alerts


def _dispatch_table(rules: tuple[Rule, ...]) -> dict[str, Dispatch]:
    """For each schema a rule names: its checks per named trigger, and for the rest.

    Checks keep the order of ``rules``; a rule without ``triggers`` sees every trigger.
    """
    table: dict[str, Dispatch] = {}
    for schema in {s for r in rules if r.on_event is not None for s in r.schemas}:
        wanting = [r for r in rules if r.on_event is not None and schema in r.schemas]
        named = {t for r in wanting if r.triggers is not None for t in r.triggers}
        by_trigger = {t: _checks(wanting, t) for t in named}
        table[schema] = (by_trigger, _checks(wanting, None))
    return table


def _checks(rules: list[Rule], trigger: str | None) -> tuple[OnEvent, ...]:
    """The checks of ``rules`` that see ``trigger`` (None: a trigger no rule names)."""
    return tuple(
        r.on_event
        for r in rules
        if r.on_event is not None and (r.triggers is None or trigger in r.triggers)
    )


def _keep_new(state: PatientState, alerts: list[Alert]) -> list[Alert]:
    """The alerts whose dedup key was never raised for this patient; remember them."""
    raised = state.raised
    new = []
    for alert in alerts:
        if alert.dedup_key not in raised:
            raised.add(alert.dedup_key)
            new.append(alert)
    return new
