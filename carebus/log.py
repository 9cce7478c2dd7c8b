"""structlog set-up: JSON lines in production, readable lines in a terminal.

Patient data must never reach a log. Callers log control ids and counts; as a
second line of defence :func:`mask_patient_data` replaces the values of keys that
name patient data, and any NHS-number-shaped digits left in other values.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
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
    )
)

# Ten digits, optionally spaced 3-3-4, not inside a longer run of digits.
_NHS_LIKE = re.compile(r"(?<!\d)\d{3}[ -]?\d{3}[ -]?\d{4}(?!\d)")


def _normalise(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def mask_patient_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask patient-identifying values in an event dict."""
    for key, value in list(event_dict.items()):
        if key == "event":
            if isinstance(value, str):
                event_dict[key] = _NHS_LIKE.sub(MASK, value)
            continue
        if _normalise(key) in PATIENT_KEYS:
            event_dict[key] = MASK
        elif isinstance(value, str):
            event_dict[key] = _NHS_LIKE.sub(MASK, value)
        elif isinstance(value, (bytes, bytearray)):
            event_dict[key] = f"<{len(value)} bytes>"
    return event_dict


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
    if settings.mask_patient_data:
        processors.append(mask_patient_data)
    processors.append(structlog.processors.format_exc_info)
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
