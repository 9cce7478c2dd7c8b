"""repeated-test: a new order for a test another provider recently resulted.

An order (``ORM^O01``/``OML^O21`` with ``ORC-1`` = ``NW``) for code ``OBR-4.1`` from
provider B, when a final result (``OBR-25`` = ``F``) for the same code came from
another provider A with ``OBR-7`` (else the result's event time) within
``retest_intervals_days[code]`` up to the order's event time. Codes not listed
never raise it. One alert per order message and code, to B.

By event time: a result counts when it was observed in the window and the message
that reported it is stamped at or before the order, whenever it arrived; the
evidence is each other provider's latest such result.
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.deadlines import DAY
from streams.region import Region
from streams.rules.base import Rule, message_alert, message_key
from streams.state import PatientState
from streams.view import ORDER, EventView

ID: Final = "repeated-test"


def check(view: EventView, state: PatientState, region: Region) -> list[Alert]:
    """Alert the ordering provider when a recent final result exists elsewhere."""
    if not state.results:
        return []
    alerts: list[Alert] = []
    for item in view.record.get("items") or ():
        if item.get("order_control") != "NW":
            continue
        code = item.get("test_code")
        days = region.retest_intervals_days.get(code) if code else None
        if code is None or days is None:
            continue
        since = view.time - days * DAY
        earlier = [
            result.control_id
            for provider, result in state.results_between(code, since, view.time).items()
            if provider != view.sender
        ]
        if earlier:
            alerts.append(
                message_alert(
                    ID,
                    state,
                    view,
                    recipients=(view.sender,),
                    key=message_key(ID, state, view, code),
                    evidence=sorted(earlier),
                    summary=f"Test {code} ordered; another provider has a final result "
                    f"within {days} days",
                )
            )
    return alerts


RULE: Final = Rule(id=ID, schemas=frozenset({ORDER}), on_event=check)
