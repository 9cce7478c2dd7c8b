"""repeated-history: a provider new to the patient while others already know them.

An ``ADT^A01``/``A04``/``A05``/``A28`` from provider P, or a ``REF^I12`` to P, when
P has neither sent a message about the patient nor been sent a referral for them
in the 365 days before this message, and some other provider has (a message from
it, or a referral to it, before this message). The patient's history is
elsewhere: P should ask for it.

"Before this message" is by event time: the window is the 365 days up to and
including its event time, among the messages applied before it. A message that
arrived earlier but is stamped later (a booking sent seconds before the
registration it follows) is not in the window. Messages with the same event time
count when they arrived first (only what was applied can count).
"""

from __future__ import annotations

from typing import Final

from streams.alert import Alert
from streams.deadlines import YEAR
from streams.region import Region
from streams.rules.base import Rule, message_alert
from streams.state import PatientState
from streams.view import DEMOGRAPHICS, ENCOUNTER, REFERRAL, EventView

ID: Final = "repeated-history"
TRIGGERS: Final = frozenset({"A01", "A04", "A05", "A28"})


def check(view: EventView, state: PatientState, region: Region) -> list[Alert]:
    """Alert a provider meeting the patient without their recent history."""
    if view.schema == REFERRAL:
        provider = view.record.get("referred_to") or view.receiver
    elif view.trigger in TRIGGERS:
        provider = view.sender
    else:
        return []
    if not provider:
        return []
    t = view.time
    since = t - YEAR
    # By event time: contacts stamped after this message do not count, whenever they arrived.
    if state.knows(provider, since, t):
        return []
    # P itself is not known in the window (above), so anyone known in it is another.
    if not state.anyone_knows(since, t):
        return []
    return [
        message_alert(
            ID,
            state,
            view,
            recipients=(provider,),
            summary="First contact with this provider in 365 days; history is held elsewhere",
        )
    ]


RULE: Final = Rule(
    id=ID,
    schemas=frozenset({ENCOUNTER, DEMOGRAPHICS, REFERRAL}),
    triggers=TRIGGERS | {"I12"},
    on_event=check,
)
