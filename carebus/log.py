"""structlog set-up: JSON lines in production, readable lines in a terminal.

Patient data must never reach a log. Callers log control ids, counts and digests,
and three processors hold that line for every record, carebus's own and those of
the libraries under it (faust, mode, aiokafka, aiohttp, asyncio), which reach the
same chain through :class:`structlog.stdlib.ProcessorFormatter` on the root logger:

1. :func:`safe_exc_info` renders a traceback as its frames and the exception's
   type; the exception's own message is kept only for carebus's errors, whose
   messages are written never to hold patient data (:mod:`carebus.errors`).
2. :func:`mask_patient_data` masks the values of keys that name patient data and
   scrubs NHS-number-shaped digits, HL7 segments and any value it masked (or
   that is digested next) from every remaining string, the event text of
   third-party records included.
3. :func:`allow_fields` lets a field through by its name: a field in
   :data:`CLEAR_FIELDS` is kept (its text scrubbed, 2), one in
   :data:`DIGEST_FIELDS` (patient keys, local identifiers, dedup keys) and any
   field not declared at all is replaced by a keyed digest (:func:`digest`), so an
   operator can still see that two lines name the same thing. Declaring a field is
   a deliberate act, reviewed like code: ``tests/carebus/test_log.py`` fails on a
   log call in carebus whose field is not declared.

The digest is HMAC-SHA256 under a key that is random per process unless
``log.digest_key_file`` names a file shared by the processes of a deployment; a
plain hash of a ten-digit NHS number could be reversed by trying them all.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from pathlib import Path
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

#: Fields logged as they are (free text in them is still scrubbed): codes, counts,
#: sizes, reasons, addresses of systems, names of components, topics and files.
CLEAR_FIELDS = frozenset(
    {
        "accepted",
        "acked",
        "address",
        "app_id",
        "batch_bytes",
        "bytes",
        "child",
        "code",
        "control_id",
        "deadlines",
        "detail",
        "digest",
        "directory",
        "dropped",
        "duplicates",
        "earlier_digest",
        "error",
        "event_loop",
        "events",
        "exit_codes",
        "failing",
        "failures",
        "fenced",
        "host",
        "hot_path",
        "kafka_version",
        "kept",
        "kind",
        "limit_s",
        "limit_per_min",
        "messages",
        "moved_to",
        "mutual_tls",
        "not_logged",
        "offset",
        "outcome",
        "partition",
        "partitions",
        "path",
        "patients",
        "peer",
        "pid",
        "port",
        "process",
        "processes",
        "provider",
        "providers",
        "published",
        "reason",
        "recipient",
        "region_config",
        "rejected",
        "restart_in_s",
        "restored",
        "restarts",
        "retry_in_s",
        "role",
        "rule",
        "seconds",
        "sending_facility",
        "size",
        "source",
        "stage",
        "store",
        "task",
        "tls",
        "topic",
        "topics",
        "unconfirmed_alerts",
        "verdict",
    }
)

#: Fields that identify a patient, a record of one or an alert about one: logged
#: only as a keyed digest.
DIGEST_FIELDS = frozenset(
    {
        "dedup_key",
        "patient_key",
        "local_id",
        "local_identifier",
        "key",
        "record_key",
        # A drop file's name: senders often name files by MRN or patient name. The
        # file's report next to it in done/ or failed/ has the name.
        "file",
    }
)

#: Keys of an event that are structure, not content.
_STRUCTURAL_KEYS = frozenset({"timestamp", "level", "component", "logger", "logger_name"})
_DIGEST_PREFIX = "#"


class _DigestKey:
    """The HMAC key of this process's digests (see the module docstring)."""

    value: bytes = secrets.token_bytes(32)


def use_digest_key(path: Path | None) -> None:
    """Digest with the key in ``path`` (shared by a deployment's processes), or a random one.

    Raises :class:`~carebus.errors.ConfigError` when the file cannot be read or holds
    fewer than 16 bytes: a short key would make the digests guessable.
    """
    from carebus.errors import ConfigError

    if path is None:
        _DigestKey.value = secrets.token_bytes(32)
        return
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            f"log.digest_key_file {path}: {exc.strerror or type(exc).__name__}"
        ) from exc
    if len(key) < 16:
        raise ConfigError(f"log.digest_key_file {path}: the key must be at least 16 bytes")
    _DigestKey.value = key


def digest(value: object) -> str:
    """A short keyed digest of ``value``: the same value gives the same digest in a process."""
    mac = hmac.new(_DigestKey.value, str(value).encode("utf-8", "replace"), hashlib.sha256)
    return _DIGEST_PREFIX + mac.hexdigest()[:16]


def allow_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: keep declared fields, digest the rest (module docstring, 3)."""
    for key, value in list(event_dict.items()):
        if key in _STRUCTURAL_KEYS or key in ("event", "exception") or key in CLEAR_FIELDS:
            continue
        if key not in DIGEST_FIELDS and _normalise(key) in PATIENT_KEYS:
            continue  # masked outright by mask_patient_data
        event_dict[key] = digest(value)
    return event_dict


def safe_exc_info(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: render ``exc_info`` as frames and type (module docstring, 1)."""
    exc_info = event_dict.pop("exc_info", None)
    if not exc_info:
        return event_dict
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc: BaseException | None = exc_info
    elif isinstance(exc_info, tuple):
        exc = exc_info[1]
    else:
        exc = None
    if exc is not None:
        event_dict["exception"] = render_exception(exc)
    return event_dict


def render_exception(exc: BaseException) -> str:
    """A traceback of ``exc`` and its causes: frames (no source lines) and types, and
    the message only of carebus's own errors."""
    from carebus.errors import CarebusError

    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    parts = []
    for item in reversed(chain):
        kind = type(item)
        name = f"{kind.__module__}.{kind.__qualname__}"
        text = str(item) if isinstance(item, CarebusError) else "(message withheld)"
        frames = "".join(
            f'  File "{f.filename}", line {f.lineno}, in {f.name}\n'
            for f in traceback.extract_tb(item.__traceback__)
        )
        parts.append(f"Traceback (most recent call last):\n{frames}{name}: {text}")
    return "\n\nwhich caused:\n\n".join(parts)


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
        if key in _STRUCTURAL_KEYS or key in DIGEST_FIELDS:
            continue  # structure, or a value allow_fields digests whole
        if key == "event":
            event_dict[key] = _scrub(value, secrets) if isinstance(value, str) else value
        else:
            event_dict[key] = _mask_value(key, value, secrets)
    return event_dict


# An HL7 v2 segment start (MSH|, PID|, ...) anywhere in a string: the message body.
_HL7_SEGMENT = re.compile(r"(?:^|[\r\n])[A-Z][A-Z0-9]{2}\|")
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
                named = k in DIGEST_FIELDS or _normalise(str(k)) in PATIENT_KEYS
                walk(v, hidden or (k != "event" and named))
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
    """Configure structlog and the stdlib root logger once, at start-up.

    Both go through the same processors (module docstring), so a third-party
    library's record is masked exactly like carebus's own.
    """
    stream = stream or sys.stderr
    level = logging.getLevelName(settings.level.upper())
    if not isinstance(level, int):
        level = logging.INFO
    fmt = settings.format
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    use_digest_key(settings.digest_key_file)
    # Tracebacks are rendered first so that the masking also covers them.
    masking: list[structlog.typing.Processor] = [safe_exc_info]
    if settings.mask_patient_data:
        masking += [mask_patient_data, allow_fields]
    else:
        masking = [structlog.processors.format_exc_info]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    stamp: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *stamp, *masking, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamp],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *masking,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.WARNING))


def get_logger(name: str) -> Any:
    """A bound structlog logger for a component."""
    return structlog.get_logger(component=name)
