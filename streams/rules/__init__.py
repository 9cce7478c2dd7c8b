"""The fourteen coordination rules of the rules spec, as an explicit table.

Order matters: alerts raised by the same event (or deadlines due at the same
moment) come out in this order.
"""

from __future__ import annotations

from typing import Final

from streams.rules import (
    activity_after_death,
    cancer_referral_not_booked,
    cancer_referral_not_seen,
    death_notified,
    death_pending_appointments,
    eol_admission,
    eol_discharge,
    faster_diagnosis_at_risk,
    faster_diagnosis_breach,
    hospice_handoff_missed,
    identity_unverified,
    repeated_emergency_admissions,
    repeated_history,
    repeated_test,
)
from streams.rules.base import Rule

RULES: Final[tuple[Rule, ...]] = (
    identity_unverified.RULE,
    repeated_history.RULE,
    repeated_test.RULE,
    cancer_referral_not_booked.RULE,
    cancer_referral_not_seen.RULE,
    faster_diagnosis_at_risk.RULE,
    faster_diagnosis_breach.RULE,
    eol_admission.RULE,
    eol_discharge.RULE,
    hospice_handoff_missed.RULE,
    repeated_emergency_admissions.RULE,
    death_notified.RULE,
    death_pending_appointments.RULE,
    activity_after_death.RULE,
)

__all__ = ["RULES", "Rule"]
