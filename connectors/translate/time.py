"""HL7 v2 date/time (DTM, and the first component of TS) to UTC ``datetime``.

``YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]``: missing parts take their lowest value
(``2026`` is 1 January 2026, 00:00). A value without an offset is local time in
Europe/London (GMT or BST by the date); a time that falls in the hour skipped when
the clocks go forward is read as GMT, and one in the hour repeated when they go
back as BST (its first occurrence). Results are UTC with millisecond precision,
which is what the Avro ``timestamp-millis`` fields keep.

Speed: both parsers are memoised (messages and feeds repeat times and birth
dates). The usual shapes (ASCII digits from day to second precision, no fraction)
are read by ``datetime.fromisoformat``, with the UTC offset subtracted; anything
else goes through the regular expression, which defines the format.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")

_DTM = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?"
    r"(?:([+-])(\d{2})(\d{2}))?"
)
#: Digits-only forms the fast path reads (by ``datetime.fromisoformat``): YYYYMMDD[HH[MM[SS]]].
_ISO_SIZES = frozenset({8, 10, 12, 14})
_OFFSETS: dict[str, timedelta] = {}
_NO_OFFSET = timedelta(0)


@functools.lru_cache(maxsize=4096)
def parse_dtm(value: str) -> datetime:
    """The UTC instant an HL7 date/time names; ``ValueError`` when it is not one.

    Results are cached: a message often repeats a time, and feeds repeat them.
    """
    text = value.strip()
    digits, offset = text, ""
    if len(text) > 5 and text[-5] in "+-":
        digits, offset = text[:-5], text[-5:]
    if (
        len(digits) in _ISO_SIZES
        and digits.isascii()
        and digits.isdecimal()
        and (not offset or _ascii_digits(offset[1:]))
    ):
        # The wall-clock time labelled UTC, then moved by its offset (given, or London's).
        # ``wall`` has fold 0: a repeated time is its first occurrence (BST), a skipped one
        # reads as GMT. A ZoneInfo reads only the wall-clock fields and fold of the
        # datetime it is given, so ``wall`` may be labelled UTC (``replace(tzinfo=None)``
        # would cost more than all the rest of the parse).
        wall = datetime.fromisoformat(f"{digits[:8]}T{digits[8:] or '00'}+00:00")
        return wall - (_offset(offset) if offset else LONDON.utcoffset(wall) or _NO_OFFSET)
    return _parse_dtm_general(text)


def _parse_dtm_general(text: str) -> datetime:
    match = _DTM.fullmatch(text)
    if match is None:
        raise ValueError("not an HL7 date/time")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    micro = int(fraction[:3].ljust(3, "0")) * 1000 if fraction else 0
    zone = LONDON if sign is None else timezone(_offset(f"{sign}{off_h}{off_m}"))
    local = datetime(
        int(year),
        int(month or 1),
        int(day or 1),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        micro,
        tzinfo=zone,
    )
    return local.astimezone(UTC)


@functools.lru_cache(maxsize=4096)
def parse_date(value: str) -> date:
    """The calendar date of an HL7 date/time as written (no time zone conversion).

    ``ValueError`` unless it has at least year, month and day.
    """
    text = value.strip()
    if len(text) in (8, 10, 12, 14) and _ascii_digits(text):
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    match = _DTM.fullmatch(text)
    if match is None or match.group(3) is None:
        raise ValueError("not an HL7 date with day precision")
    return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))


def to_millis(moment: datetime) -> datetime:
    """``moment`` in UTC, truncated to whole milliseconds (naive means UTC)."""
    if moment.tzinfo is UTC and not moment.microsecond % 1000:
        return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdecimal()


def _offset(text: str) -> timedelta:
    """``+HHMM`` / ``-HHMM`` as a timedelta; ``ValueError`` when out of range."""
    delta = _OFFSETS.get(text)
    if delta is None:
        hours, minutes = int(text[1:3]), int(text[3:5])
        if hours > 23 or minutes > 59:
            raise ValueError("UTC offset out of range")
        delta = timedelta(hours=hours, minutes=minutes)
        delta = _OFFSETS[text] = -delta if text[0] == "-" else delta
    return delta
