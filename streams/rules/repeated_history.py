"""repeated-history: a provider new to the patient while others already know them.

An ``ADT^A01``/``A04``/``A05``/``A28`` from provider P, or a ``REF^I12`` to P, when
P has neither sent a message about the patient nor been sent a referral for them
in the 365 days before this message, and some other provider has (a message from
it, or a referral to it, before this message). The patient's history is
elsewhere: P should ask for it.
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
    since = view.time - YEAR
    if state.seen.get(provider, since - 1) >= since:
        return []
    if state.referred.get(provider, since - 1) >= since:
        return []
    # P itself is not known since then (above), so anyone known since then is another.
    seen, referred = state.seen, state.referred
    if not (seen and max(seen.values()) >= since) and not (
        referred and max(referred.values()) >= since
    ):
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
