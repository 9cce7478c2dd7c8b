"""HL7 v2 date/time (DTM, and the first component of TS) to UTC ``datetime``.

``YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]``: missing parts take their lowest value
(``2026`` is 1 January 2026, 00:00). A value without an offset is local time in
Europe/London (GMT or BST by the date); a time that falls in the hour skipped when
the clocks go forward is read as GMT, and one in the hour repeated when they go
back as BST (its first occurrence). Results are UTC with millisecond precision,
which is what the Avro ``timestamp-millis`` fields keep.

Speed: both parsers are memoised (messages and feeds repeat times and birth
dates), and the usual shapes (ASCII digits, no fraction) are read by slicing;
anything else goes through the regular expression, which defines the format.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")

_DTM = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?"
    r"(?:([+-])(\d{2})(\d{2}))?"
)
#: Lengths of the digits-only forms the fast path reads: YYYY up to YYYYMMDDHHMMSS.
_PLAIN_LENGTHS = frozenset({4, 6, 8, 10, 12, 14})
_OFFSETS: dict[str, tzinfo] = {}


@functools.lru_cache(maxsize=4096)
def parse_dtm(value: str) -> datetime:
    """The UTC instant an HL7 date/time names; ``ValueError`` when it is not one.

    Results are cached: a message often repeats a time, and feeds repeat them.
    """
    text = value.strip()
    digits, offset = text, ""
    if len(text) > 5 and text[-5] in "+-":
        digits, offset = text[:-5], text[-5:]
    if _plain_digits(digits) and (not offset or _ascii_digits(offset[1:])):
        size = len(digits)
        year = int(digits[:4])
        month = int(digits[4:6]) if size > 4 else 1
        day = int(digits[6:8]) if size > 6 else 1
        hour = int(digits[8:10]) if size > 8 else 0
        minute = int(digits[10:12]) if size > 10 else 0
        second = int(digits[12:14]) if size > 12 else 0
        zone = _offset(offset[0], offset[1:3], offset[3:]) if offset else LONDON
        return datetime(year, month, day, hour, minute, second, tzinfo=zone).astimezone(UTC)
    return _parse_dtm_general(text)


def _parse_dtm_general(text: str) -> datetime:
    match = _DTM.fullmatch(text)
    if match is None:
        raise ValueError("not an HL7 date/time")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    micro = int(fraction[:3].ljust(3, "0")) * 1000 if fraction else 0
    zone = LONDON if sign is None else _offset(sign, off_h, off_m)
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


def _plain_digits(text: str) -> bool:
    return len(text) in _PLAIN_LENGTHS and text.isascii() and text.isdecimal()


def _offset(sign: str, hours: str, minutes: str) -> tzinfo:
    key = f"{sign}{hours}{minutes}"
    zone = _OFFSETS.get(key)
    if zone is None:
        if int(hours) > 23 or int(minutes) > 59:
            raise ValueError("UTC offset out of range")
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        zone = _OFFSETS[key] = timezone(-delta if sign == "-" else delta)
    return zone
