"""Event-time arithmetic and the deadlines kept in patient state.

Times inside the engine and its state are whole microseconds since the Unix epoch
(UTC): exact, cheap to compare and JSON-friendly. Windows are elapsed time, so a
day is always 24 hours, whatever the clocks do in Europe/London.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

SECOND: Final = 1_000_000
HOUR: Final = 3600 * SECOND
DAY: Final = 24 * HOUR
YEAR: Final = 365 * DAY  # the care-team and repeated-history window


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware ``moment``."""
    if moment.tzinfo is None:
        raise ValueError("event times must be timezone-aware")
    elapsed = moment - EPOCH  # whole days, seconds and microseconds: exact, no division
    return (elapsed.days * 86_400 + elapsed.seconds) * SECOND + elapsed.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC datetime ``micros`` microseconds after the epoch."""
    seconds, micro = divmod(micros, SECOND)
    return EPOCH + timedelta(0, seconds, micro)


class Deadline(NamedTuple):
    """A rule's clock running out at ``due`` for the episode ``ref`` of a patient.

    ``ref`` names the episode in :class:`streams.state.PatientState` (a cancer
    pathway or a hospice discharge) whose condition the rule checks when it fires.
    Deadlines order by due time, then rule id, then episode.
    """

    due: int
    rule: str
    ref: str

    def to_list(self) -> list[int | str]:
        """The JSON form: ``[due, rule, ref]``."""
        return [self.due, self.rule, self.ref]

    @classmethod
    def from_list(cls, raw: list[int | str]) -> Deadline:
        """Inverse of :meth:`to_list`."""
        due, rule, ref = raw
        return cls(due=int(due), rule=str(rule), ref=str(ref))
