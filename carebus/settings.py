"""One settings object, built once at start-up and passed down.

Settings come from three places, later ones winning:

1. the defaults below;
2. an optional TOML file (``--config FILE`` or ``CAREBUS_CONFIG``), whose tables are
   the sections below (``[kafka]``, ``[mllp]``, ...);
3. environment variables named ``CAREBUS_<SECTION>_<FIELD>``, for example
   ``CAREBUS_KAFKA_BOOTSTRAP_SERVERS`` or ``CAREBUS_MLLP_PORT``.

No other module reads the environment: build a :class:`Settings` with
:func:`load_settings` and hand it (or the section a component needs) down.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from carebus.errors import ConfigError

ENV_PREFIX = "CAREBUS_"
CONFIG_ENV = "CAREBUS_CONFIG"


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach Kafka. Empty ``bootstrap_servers`` means: run the local broker."""

    bootstrap_servers: str = ""
    client_id: str = "carebus"
    #: ``SASL_SSL`` (SCRAM over TLS) or ``SSL`` with a client certificate (mutual TLS)
    #: outside a development machine; docs/security.md.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    #: CA bundle the brokers' certificates are checked against (None: the system's).
    ssl_cafile: Path | None = None
    #: Client certificate and key: mutual TLS (``SSL``), or TLS client auth beside SASL.
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    #: Whether a broker's certificate must name the host it was reached at.
    ssl_check_hostname: bool = True
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    #: A file holding the SASL password (a mounted Secret), read when a client is
    #: configured, so a rotated password is picked up by a restart; wins over
    #: ``sasl_password``.
    sasl_password_file: Path | None = None
    request_timeout_s: float = 30.0
    #: How long an alert status record waits for others to share its batch.
    producer_linger_ms: int = 3


@dataclass(frozen=True)
class BrokerSettings:
    """The project's own single-node KRaft broker, used when no cluster is configured."""

    kafka_version: str = "4.4.0"
    log4j_version: str = "2.25.3"
    home: Path = Path(".carebus/broker")
    cache_dir: Path = Path("~/.cache/carebus")
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "768m"
    #: Request-handling threads (Kafka's defaults, 3 and 8, are for a server of its own;
    #: on a small machine shared with the connectors, fewer threads cost less CPU).
    network_threads: int = 1
    io_threads: int = 2
    start_timeout_s: float = 90.0
    stop_timeout_s: float = 30.0
    java: str = "java"
    maven: str = "mvn"


@dataclass(frozen=True)
class TopicSettings:
    """Topic names and sizing; the declarations themselves live in ``carebus.topics``."""

    prefix: str = "carebus"
    partitions: int = 6
    replication_factor: int = 1
    min_insync_replicas: int = 1
    #: Outside the local development broker, replication factor < 3 or
    #: ``min.insync.replicas`` < 2 refuses to start unless this is true
    #: (``carebus.durability``); then a warning at start, and ``/readyz`` says so.
    allow_low_durability: bool = False


@dataclass(frozen=True)
class MllpSettings:
    """The MLLP listener."""

    host: str = "127.0.0.1"
    port: int = 2575
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    tls_client_cafile: Path | None = None
    max_frame_bytes: int = 1_048_576
    idle_timeout_s: float = 300.0
    max_connections: int = 256
    #: Connections one peer IP address may hold open at once (across all of
    #: ``mllp.processes``); 0 is no limit besides ``max_connections``.
    max_connections_per_ip: int = 32
    #: A frame must be complete this many seconds after its start byte (slowloris).
    frame_timeout_s: float = 30.0
    #: Messages a second per connection (reading slows down; nothing is dropped); 0 is off.
    rate_limit_per_s: float = 0.0
    #: Messages a second per peer IP address, shared by all its connections (reading
    #: slows down; nothing is dropped); 0 is off. Far above any real feed
    #: (docs/operations.md, "Listener guards").
    rate_limit_per_ip_per_s: float = 500.0
    reject_ack_code: Literal["AR", "AE"] = "AR"
    on_kafka_failure: Literal["AE", "close"] = "AE"
    duplicate_window_s: float = 86_400.0
    publish_timeout_s: float = 10.0
    #: How long a message's records wait for others to share their produce request when
    #: none is in flight (under load, records wait for the request in flight instead).
    publish_linger_ms: float = 1.0
    allowed_senders_file: Path | None = None
    duplicate_max_entries: int = 500_000
    #: Dead letters one peer (source address) may cause a minute, in bursts of as many;
    #: over it, rejections are still answered but not dead-lettered (counted, logged).
    #: 0: no limit.
    deadletters_per_peer_per_min: int = 6000
    #: The listener's event loop: ``auto`` (uvloop when installed, else asyncio),
    #: ``asyncio``, or ``uvloop`` (a ConfigError when it is not installed).
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    #: Listener processes. Over 1, a parent accepts connections and hands each to a
    #: child chosen by the peer's IP address; child ``i`` serves its own ``/metrics``
    #: on ``metrics.listener_port + 1 + i`` (docs/operations.md). 0: one per CPU.
    processes: int = 1
    #: Start on a non-loopback ``host`` without TLS and client certificates or an
    #: allow-list (warned at start, reported by ``/readyz``; carebus.exposure).
    allow_insecure: bool = False
    #: Every this many seconds, each listener process writes the watermark of each
    #: provider whose feed it stored more of since (how far that provider's event
    #: times have been stored) to every partition of the events topic, and every 30
    #: intervals all of them again; the worker's live clock follows them
    #: (docs/architecture.md, "Feed watermarks"). 0: none are written.
    watermark_interval_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("frame_timeout_s", "idle_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"mllp.{name} must be positive, not {getattr(self, name)}")
        for name in (
            "max_connections_per_ip",
            "rate_limit_per_s",
            "rate_limit_per_ip_per_s",
            "watermark_interval_s",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"mllp.{name} must be 0 (off) or more, not {getattr(self, name)}")


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP ingest endpoint."""

    host: str = "127.0.0.1"
    port: int = 8080
    enabled: bool = False
    max_body_bytes: int = 16_777_216
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    tls_client_cafile: Path | None = None
    #: When set, every request needs ``Authorization: Bearer <first line of the file>``.
    token_file: Path | None = None
    #: Start on a non-loopback ``host`` without TLS and client certificates or an
    #: allow-list (carebus.exposure).
    allow_insecure: bool = False


@dataclass(frozen=True)
class FileDropSettings:
    """The file-drop connector."""

    directory: Path = Path(".carebus/drop")
    poll_interval_s: float = 1.0
    enabled: bool = False
    #: A file is taken only once neither its content nor its metadata has changed
    #: for this long (and no process has it open for writing).
    settle_s: float = 2.0
    #: Larger files are moved to ``failed/`` unread (64 MiB).
    max_file_bytes: int = 67_108_864


@dataclass(frozen=True)
class TranslateSettings:
    """HL7 v2 translation."""

    fallback_charset: str = "iso-8859-1"
    strict_senders: tuple[str, ...] = ()
    wire_format: Literal["single-object", "confluent"] = "single-object"
    schema_registry_url: str | None = None


@dataclass(frozen=True)
class WorkerSettings:
    """The Faust stream worker."""

    app_id: str = "carebus-worker"
    store: str = "rocksdb://"
    data_dir: Path = Path(".carebus/worker")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    #: The URL other workers reach THIS worker's web server at (the alert lookup is
    #: routed to the worker owning the key). Empty: ``http(s)://{web_host}:{web_port}``,
    #: the machine's name for a wildcard ``web_host``.
    advertised_url: str = ""
    #: The alert lookup answers only ``Authorization: Bearer <first line of the file>``;
    #: unset, it answers 401 to everyone.
    web_token_file: Path | None = None
    web_tls_certfile: Path | None = None
    web_tls_keyfile: Path | None = None
    #: Serve the web port on a non-loopback ``web_host`` without TLS (carebus.exposure).
    allow_insecure: bool = False
    region_config: Path = Path("deploy/region.yaml")
    tick_interval_s: float = 5.0
    #: An ops alert (ops topic) when a provider holds the worker's live clock further
    #: than this behind the wall clock (its feed is late: its deadlines wait).
    clock_behind_alert_s: float = 3600.0
    #: Kafka waits this long for a silent worker (a SIGKILLed one) before rebalancing.
    session_timeout_s: float = 15.0
    #: The worker's event loop: ``auto`` (uvloop when installed, else asyncio),
    #: ``asyncio``, or ``uvloop`` (a ConfigError when it is not installed).
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus metrics, health checks and the dashboard."""

    host: str = "127.0.0.1"
    listener_port: int = 9464
    worker_port: int = 9465
    dashboard_port: int = 8088
    #: HTTPS for ``/metrics``, ``/healthz``, ``/readyz`` and the dashboard.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    #: Serve these on a non-loopback ``host`` without TLS (carebus.exposure).
    allow_insecure: bool = False


@dataclass(frozen=True)
class LogSettings:
    """Logging. Patient data is masked unless ``mask_patient_data`` is turned off.

    ``digest_key_file``: the key of the digests that stand for identifiers in logs
    (:mod:`carebus.log`), shared by a deployment's processes so that their digests
    match; unset, each process digests with a random key of its own.
    """

    level: str = "INFO"
    format: Literal["auto", "json", "console"] = "auto"
    mask_patient_data: bool = True
    digest_key_file: Path | None = None


@dataclass(frozen=True)
class Settings:
    """Everything carebus can be told, one section per component."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    mllp: MllpSettings = field(default_factory=MllpSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    filedrop: FileDropSettings = field(default_factory=FileDropSettings)
    translate: TranslateSettings = field(default_factory=TranslateSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)

    @property
    def uses_local_broker(self) -> bool:
        """True when no cluster is configured and carebus runs its own broker."""
        return not self.kafka.bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        """The bootstrap servers to connect to, local broker included."""
        if self.kafka.bootstrap_servers:
            return self.kafka.bootstrap_servers
        return f"{self.broker.host}:{self.broker.port}"

    def replace(self, **sections: Any) -> Settings:
        """A copy with whole sections replaced (handy in tests)."""
        return dataclasses.replace(self, **sections)


def env_names() -> set[str]:
    """Every environment variable name the settings read (documented, and tested)."""
    names = {CONFIG_ENV}
    for section in dataclasses.fields(Settings):
        section_type = _section_types()[section.name]
        for f in dataclasses.fields(section_type):
            names.add(f"{ENV_PREFIX}{section.name.upper()}_{f.name.upper()}")
    return names


def load_settings(
    env: Mapping[str, str] | None = None, config_file: Path | None = None
) -> Settings:
    """Build the settings from defaults, an optional TOML file and the environment.

    ``env`` is the environment to read (the caller passes ``os.environ``); a missing
    ``config_file`` falls back to ``CAREBUS_CONFIG``.
    """
    env = dict(env or {})
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in env_names())
    if unknown:
        raise ConfigError(f"unknown setting(s) in the environment: {', '.join(unknown)}")
    file_values: dict[str, Any] = {}
    path = config_file or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    if path is not None:
        try:
            file_values = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    sections: dict[str, Any] = {}
    types_by_section = _section_types()
    for name in file_values:
        if name not in types_by_section:
            raise ConfigError(f"config file {path}: unknown section [{name}]")
    for name, section_type in types_by_section.items():
        raw = dict(file_values.get(name, {}))
        for f in dataclasses.fields(section_type):
            key = f"{ENV_PREFIX}{name.upper()}_{f.name.upper()}"
            if key in env:
                raw[f.name] = env[key]
        sections[name] = _build_section(name, section_type, raw)
    return Settings(**sections)


def _section_types() -> dict[str, type[Any]]:
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings)}


def _build_section(name: str, section_type: type[Any], raw: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(section_type)
    known = {f.name for f in dataclasses.fields(section_type)}
    extra = sorted(set(raw) - known)
    if extra:
        raise ConfigError(f"[{name}]: unknown setting(s) {', '.join(extra)}")
    values = {}
    for key, value in raw.items():
        try:
            values[key] = _coerce(hints[key], value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}.{key}: {exc}") from exc
    return section_type(**values)


def _coerce(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip() == ""):
            return None
        return _coerce(inner[0], value)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"must be one of {', '.join(map(str, args))}, not {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(str(v) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"expected true or false, not {value!r}")
    if hint is int:
        return int(value)
    if hint is float:
        return float(value)
    if hint is Path:
        return Path(str(value))
    if hint is str:
        return str(value)
    raise TypeError(f"unsupported setting type {hint!r}")
