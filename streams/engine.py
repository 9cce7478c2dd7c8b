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

from streams.alert import Alert
from streams.deadlines import Deadline, from_micros, to_micros
from streams.observe import observe
from streams.region import Region
from streams.rules import RULES
from streams.rules.base import OnEvent, Rule
from streams.state import PatientState
from streams.view import SCHEMAS, EventLike, EventView

#: at most this many (schema, trigger) pairs are remembered by the dispatch table
_DISPATCH_LIMIT = 1024


class Engine:
    """Runs the rules of ``rules`` (default: all fourteen) for ``region``."""

    def __init__(self, region: Region, rules: Iterable[Rule] = RULES) -> None:
        self.region = region
        self.rules = tuple(rules)
        ids = [r.id for r in self.rules]
        if len(set(ids)) != len(ids):
            raise ValueError("rule ids must be unique")
        #: (schema, trigger) -> the event checks that want it, built on first use
        self._dispatch: dict[tuple[str, str], tuple[OnEvent, ...]] = {}
        self._deadline_rules = {r.id: r for r in self.rules if r.on_deadline is not None}
        self._clocks: dict[str, tuple[Rule, ...]] = {}
        for rule in self._deadline_rules.values():
            if rule.episode is not None:
                self._clocks[rule.episode] = (*self._clocks.get(rule.episode, ()), rule)

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
        alerts = self.fire_due_micros(state, view.time - 1) if state.deadlines else []
        region = self.region
        checks = self._dispatch.get((view.schema, view.trigger))
        if checks is None:
            checks = self._checks_for(view.schema, view.trigger)
        for check in checks:
            raised = check(view, state, region)
            if raised:
                alerts.extend(_keep_new(state, raised))
        for opened in observe(view, state, region):
            for rule in self._clocks.get(opened.kind, ()):
                state.add_deadline(Deadline(opened.start + rule.delay, rule.id, opened.ref))
        return alerts

    def _checks_for(self, schema: str, trigger: str) -> tuple[OnEvent, ...]:
        checks = tuple(
            r.on_event
            for r in self.rules
            if r.on_event is not None
            and schema in r.schemas
            and (r.triggers is None or trigger in r.triggers)
        )
        if schema in SCHEMAS and len(self._dispatch) < _DISPATCH_LIMIT:
            self._dispatch[(schema, trigger)] = checks
        return checks

    def fire_due_micros(self, state: PatientState, now: int) -> list[Alert]:
        """:meth:`fire_due` with ``now`` in epoch microseconds."""
        if not state.deadlines or state.deadlines[0].due > now:
            return []
        alerts: list[Alert] = []
        for deadline in state.pop_due(now):
            rule = self._deadline_rules.get(deadline.rule)
            if rule is not None and rule.on_deadline is not None:
                alerts.extend(_keep_new(state, rule.on_deadline(deadline, state, self.region)))
            if deadline.ref in state.discharges and not state.has_deadlines(deadline.ref):
                state.close_episode(deadline.ref)
        return alerts


def _keep_new(state: PatientState, alerts: list[Alert]) -> list[Alert]:
    """The alerts whose dedup key was never raised for this patient; remember them."""
    raised = state.raised
    new = []
    for alert in alerts:
        if alert.dedup_key not in raised:
            raised.add(alert.dedup_key)
            new.append(alert)
    return new
