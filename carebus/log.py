"""structlog set-up: JSON lines in production, readable lines in a terminal.

Patient data must never reach a log. Callers log control ids and counts; as a
second line of defence :func:`mask_patient_data` replaces the values of keys that
name patient data, and any NHS-number-shaped digits left in other values.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from carebus.settings import LogSettings

MASK = "***"

#: Keys whose values are patient data wherever they appear (compared lower-case,
#: ignoring ``_`` and ``-``).
PATIENT_KEYS = frozenset(
    k.replace("_", "")
    for k in (
        "nhs_number",
        "nhsno",
        "nhs",
        "patient",
        "patient_key",
        "patient_id",
        "mrn",
        "identifier",
        "identifiers",
        "name",
        "patient_name",
        "family_name",
        "given_name",
        "surname",
        "forename",
        "dob",
        "date_of_birth",
        "birth_date",
        "birthdate",
        "address",
        "postcode",
        "post_code",
        "phone",
        "telephone",
        "email",
        "body",
        "raw",
        "message",
        "message_body",
        "hl7",
        "payload",
        "segment",
        "pid",
        "family",
        "given",
        "forenames",
        "birth_time",
    )
)

# Ten digits, optionally spaced 3-3-4, not inside a longer run of digits.
_NHS_LIKE = re.compile(r"(?<!\d)\d{3}[ -]?\d{3}[ -]?\d{4}(?!\d)")


def _normalise(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def mask_patient_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask patient-identifying values in an event dict.

    Values under patient keys are replaced (at any depth); whatever they contained
    is also scrubbed from every other string in the event (a name repeated in the
    message, say), as are NHS-number-shaped digits and whole HL7 messages.
    """
    secrets = _secrets(event_dict)
    for key, value in list(event_dict.items()):
        if key in _STRUCTURAL_KEYS:
            continue
        if key == "event":
            event_dict[key] = _scrub(value, secrets) if isinstance(value, str) else value
        else:
            event_dict[key] = _mask_value(key, value, secrets)
    return event_dict


# An HL7 v2 segment start (MSH|, PID|, ...) anywhere in a string: the message body.
_HL7_SEGMENT = re.compile(r"(?:^|[\r\n])[A-Z][A-Z0-9]{2}\|")
# Keys structlog itself adds; never patient data, and left exactly as they are.
_STRUCTURAL_KEYS = frozenset({"timestamp", "level", "component", "logger"})
_SECRET_SPLIT = re.compile(r"[\s^,;|/\\&~.:-]+")


def _mask_value(key: str, value: Any, secrets: list[str]) -> Any:
    if _normalise(key) in PATIENT_KEYS:
        return MASK
    if isinstance(value, str):
        return _scrub(value, secrets)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {k: _mask_value(str(k), v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_mask_value("", v, secrets) for v in value]
    return value


def _secrets(event_dict: Mapping[str, Any]) -> list[str]:
    """Text fragments held under patient keys anywhere in the event, longest first."""
    found: set[str] = set()

    def walk(item: Any, hidden: bool) -> None:
        if isinstance(item, Mapping):
            for k, v in item.items():
                walk(v, hidden or (k != "event" and _normalise(str(k)) in PATIENT_KEYS))
        elif isinstance(item, (list, tuple, set, frozenset)):
            for v in item:
                walk(v, hidden)
        elif hidden and isinstance(item, (str, int)) and not isinstance(item, bool):
            text = str(item).strip()
            parts = [text, *_SECRET_SPLIT.split(text), re.sub(r"\D", "", text)]
            found.update(p for p in parts if len(p) >= 3)

    walk(event_dict, False)
    return sorted(found, key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    if _HL7_SEGMENT.search(text):
        return f"<hl7 masked: {len(text)} chars>"
    text = _NHS_LIKE.sub(MASK, text)
    for secret in secrets:
        text = re.sub(re.escape(secret), MASK, text, flags=re.IGNORECASE)
    return text


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Configure structlog (and the stdlib root logger) once, at start-up."""
    stream = stream or sys.stderr
    level = logging.getLevelName(settings.level.upper())
    if not isinstance(level, int):
        level = logging.INFO
    fmt = settings.format
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Tracebacks are rendered first so that the masking also covers them.
    processors.append(structlog.processors.format_exc_info)
    if settings.mask_patient_data:
        processors.append(mask_patient_data)
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers[:] = [logging.StreamHandler(stream)]
    root.setLevel(max(level, logging.WARNING))


def get_logger(name: str) -> Any:
    """A bound structlog logger for a component."""
    return structlog.get_logger(component=name)
