"""The region config: which providers exist, what kind each is, and the code lists.

One YAML file, validated once at start-up by :func:`load_region`; anything wrong
raises :class:`carebus.errors.ConfigError` with a message naming the offending key.
Every key but ``providers`` is optional and defaults to the rules spec's values.
Codes may be written as YAML strings or integers (``[88]`` reads as ``["88"]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from carebus.errors import ConfigError

KINDS: Final = frozenset({"hospital", "gp", "hospice", "community", "council", "unknown"})
UNKNOWN: Final = "unknown"

DEFAULT_CANCER_PRIORITIES: Final = ("2WW",)
DEFAULT_OUTCOME_DOCUMENT_TYPES: Final = ("CANCER-OUTCOME",)
DEFAULT_EOL_REGISTER_CODES: Final = ("1403151000000103",)
DEFAULT_HOSPICE_DISCHARGE_DESTINATIONS: Final = ("88",)
DEFAULT_EMERGENCY_ADMISSION_TYPES: Final = ("E",)
DEFAULT_RETEST_INTERVALS_DAYS: Final = {"4548-4": 90}
#: A provider that sent nothing for this long no longer holds the live clock back.
DEFAULT_FEED_IDLE_MINUTES: Final = 5.0

_TOP_KEYS: Final = frozenset(
    {
        "providers",
        "suspected_cancer",
        "eol_register_codes",
        "hospice_discharge_destinations",
        "emergency_admission_types",
        "retest_intervals_days",
        "feed_idle_minutes",
    }
)
_CANCER_KEYS: Final = frozenset({"priorities", "outcome_document_types"})
# ``expected_interval`` belongs to ops (carebus.feedwatch validates and uses it);
# the rules accept it so one region file serves every process.
_PROVIDER_KEYS: Final = frozenset({"name", "kind", "expected_interval"})


@dataclass(frozen=True)
class Provider:
    """A provider of the region: its code (MSH-4.1), display name and kind."""

    code: str
    name: str
    kind: str


@dataclass(frozen=True)
class Region:
    """A validated region config."""

    providers: Mapping[str, Provider]
    cancer_priorities: frozenset[str] = frozenset(DEFAULT_CANCER_PRIORITIES)
    outcome_document_types: frozenset[str] = frozenset(DEFAULT_OUTCOME_DOCUMENT_TYPES)
    eol_register_codes: frozenset[str] = frozenset(DEFAULT_EOL_REGISTER_CODES)
    hospice_discharge_destinations: frozenset[str] = frozenset(
        DEFAULT_HOSPICE_DISCHARGE_DESTINATIONS
    )
    emergency_admission_types: frozenset[str] = frozenset(DEFAULT_EMERGENCY_ADMISSION_TYPES)
    retest_intervals_days: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_RETEST_INTERVALS_DAYS)
    )
    #: The live clock: minutes of wall-clock silence after which a provider no longer
    #: holds the clock back (rules spec, "Clock").
    feed_idle_minutes: float = DEFAULT_FEED_IDLE_MINUTES

    def kind(self, code: str) -> str:
        """The kind of provider ``code``; ``unknown`` for providers not in the config."""
        provider = self.providers.get(code)
        return provider.kind if provider is not None else UNKNOWN


def load_region(path: Path) -> Region:
    """Read and validate the region YAML file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read region config {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"region config {path} is not UTF-8 text") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"region config {path} is not valid YAML{where}") from exc
    return parse_region(data, source=str(path))


def parse_region(data: Any, *, source: str = "region config") -> Region:
    """Validate already-parsed YAML ``data`` (a mapping) into a :class:`Region`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: must be a mapping with at least a 'providers' key")
    unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
    if "providers" not in data:
        raise ConfigError(f"{source}: 'providers' is required")
    cancer = data.get("suspected_cancer")
    if cancer is None:
        cancer = {}
    if not isinstance(cancer, Mapping):
        raise ConfigError(f"{source}: 'suspected_cancer' must be a mapping")
    unknown = sorted(str(k) for k in cancer if k not in _CANCER_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in 'suspected_cancer': {', '.join(unknown)}")
    return Region(
        providers=_providers(data["providers"], source),
        cancer_priorities=_codes(
            cancer, "priorities", DEFAULT_CANCER_PRIORITIES, source, "suspected_cancer."
        ),
        outcome_document_types=_codes(
            cancer,
            "outcome_document_types",
            DEFAULT_OUTCOME_DOCUMENT_TYPES,
            source,
            "suspected_cancer.",
        ),
        eol_register_codes=_codes(data, "eol_register_codes", DEFAULT_EOL_REGISTER_CODES, source),
        hospice_discharge_destinations=_codes(
            data, "hospice_discharge_destinations", DEFAULT_HOSPICE_DISCHARGE_DESTINATIONS, source
        ),
        emergency_admission_types=_codes(
            data, "emergency_admission_types", DEFAULT_EMERGENCY_ADMISSION_TYPES, source
        ),
        retest_intervals_days=_intervals(data.get("retest_intervals_days"), source),
        feed_idle_minutes=_minutes(data.get("feed_idle_minutes"), source),
    )


def _minutes(raw: Any, source: str) -> float:
    if raw is None:
        return DEFAULT_FEED_IDLE_MINUTES
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not raw > 0:
        raise ConfigError(f"{source}: 'feed_idle_minutes' must be a positive number of minutes")
    return float(raw)


def _code(value: Any) -> str | None:
    """A code as a string; YAML integers are accepted, other types are not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int):
        return str(value)
    return None


def _providers(raw: Any, source: str) -> dict[str, Provider]:
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{source}: 'providers' must be a non-empty mapping of code to provider")
    providers: dict[str, Provider] = {}
    for raw_code, entry in raw.items():
        code = _code(raw_code)
        if code is None:
            raise ConfigError(f"{source}: providers: {raw_code!r} is not a provider code")
        where = f"{source}: providers.{code}"
        if code in providers:
            raise ConfigError(f"{where}: listed twice")
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: must be a mapping with 'kind' (and optionally 'name')")
        extra = sorted(str(k) for k in entry if k not in _PROVIDER_KEYS)
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}")
        kind = entry.get("kind")
        if kind is None:
            raise ConfigError(f"{where}.kind is required")
        if kind not in KINDS:
            raise ConfigError(
                f"{where}.kind must be one of {', '.join(sorted(KINDS))}, not {kind!r}"
            )
        name = entry.get("name", code)
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}.name must be a non-empty string")
        providers[code] = Provider(code=code, name=name.strip(), kind=str(kind))
    return providers


def _codes(
    data: Mapping[Any, Any],
    key: str,
    default: tuple[str, ...],
    source: str,
    prefix: str = "",
) -> frozenset[str]:
    if key not in data or data[key] is None:
        return frozenset(default)
    raw = data[key]
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: '{prefix}{key}' must be a list of codes")
    codes = set()
    for item in raw:
        code = _code(item)
        if code is None:
            raise ConfigError(f"{source}: '{prefix}{key}' has {item!r}, which is not a code")
        codes.add(code)
    return frozenset(codes)


def _intervals(raw: Any, source: str) -> dict[str, int]:
    if raw is None:
        return dict(DEFAULT_RETEST_INTERVALS_DAYS)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: 'retest_intervals_days' must be a mapping of code to days")
    intervals: dict[str, int] = {}
    for raw_code, days in raw.items():
        code = _code(raw_code)
        if code is None:
            raise ConfigError(f"{source}: retest_intervals_days: {raw_code!r} is not a test code")
        if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
            raise ConfigError(
                f"{source}: retest_intervals_days.{code} must be a positive whole number of days"
            )
        intervals[code] = days
    return intervals
