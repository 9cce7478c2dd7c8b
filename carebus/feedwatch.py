"""Silent-feed alerting: a provider's feed that stops raises an ops alert.

Each provider in the region config may say how often its feed is expected to
carry a message::

    providers:
      RX1: {name: Example General Hospital, kind: hospital, expected_interval: 15m}

(``30s``, ``15m``, ``2h``, ``1d``, combinations such as ``1h30m``, or a number of
seconds). The detection is pure: :class:`FeedWatch` keeps the last time each
provider was seen and, given ``now``, returns the :class:`OpsAlert` s to publish,
once per silence (``feed-silent``) and once when the feed comes back
(``feed-resumed``). :func:`run_feedwatch` is the Kafka loop around it: it reads the
raw topic's ``carebus-sender`` / ``carebus-received-time`` headers and publishes
alerts as JSON on ``TopicNames.ops``, keyed by provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from carebus.errors import ConfigError
from carebus.log import get_logger
from carebus.metrics import Metrics
from carebus.settings import Settings
from carebus.topics import TopicNames

log = get_logger(__name__)

SENDER_HEADER = "carebus-sender"
RECEIVED_TIME_HEADER = "carebus-received-time"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(value: object) -> timedelta:
    """A duration from ``15m``, ``1h30m``, ``2d``, ``45s`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        if not text or _DURATION.sub("", text):
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"not a duration: {value!r} (use e.g. 15m, 2h, 1d)") from None
        else:
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(text))
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, not {value!r}")
    return timedelta(seconds=seconds)


def load_feed_expectations(path: Path) -> dict[str, timedelta | None]:
    """Every provider of the region config with its ``expected_interval`` (or None)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read region config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"region config {path} is not valid YAML") from exc
    providers = (data or {}).get("providers") if isinstance(data, dict) else None
    if not isinstance(providers, dict):
        raise ConfigError(f"region config {path}: 'providers' must be a mapping")
    out: dict[str, timedelta | None] = {}
    for code, entry in providers.items():
        raw = entry.get("expected_interval") if isinstance(entry, dict) else None
        if raw is None:
            out[str(code)] = None
            continue
        try:
            out[str(code)] = parse_interval(raw)
        except ValueError as exc:
            raise ConfigError(
                f"region config {path}: providers.{code}.expected_interval: {exc}"
            ) from exc
    return out


def header(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str | None:
    """The decoded value of a Kafka record header, or None."""
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode("utf-8", errors="replace")
    return None


def parse_time(text: str | None) -> datetime | None:
    """An aware UTC time from ISO 8601 (naive means UTC) or epoch seconds/milliseconds."""
    if not text:
        return None
    text = text.strip()
    try:
        if re.fullmatch(r"\d+(\.\d+)?", text):
            number = float(text)
            return datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def received_at(headers: Sequence[tuple[str, bytes | None]] | None, timestamp_ms: int) -> datetime:
    """When a raw record was received: its header, else the Kafka record timestamp."""
    return parse_time(header(headers, RECEIVED_TIME_HEADER)) or datetime.fromtimestamp(
        timestamp_ms / 1000, UTC
    )


@dataclass(frozen=True)
class OpsAlert:
    """An operational alert about one provider's feed (never about a patient)."""

    kind: str
    provider: str
    raised_at: datetime
    last_seen: datetime | None
    expected_interval: timedelta

    @property
    def summary(self) -> str:
        minutes = self.expected_interval.total_seconds() / 60
        if self.kind == "feed-silent":
            seen = self.last_seen.isoformat() if self.last_seen else "never since watch started"
            return f"No message from {self.provider} for over {minutes:g} min (last: {seen})"
        return f"Feed from {self.provider} resumed"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "provider": self.provider,
            "raised_at": self.raised_at.isoformat(),
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "expected_interval_s": self.expected_interval.total_seconds(),
            "summary": self.summary,
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode("utf-8")


@dataclass
class FeedWatch:
    """Which feeds are quiet beyond their expected interval (pure; no clock, no I/O).

    A provider never seen counts from ``started_at``. Each silence raises one
    ``feed-silent`` alert; a message after it raises one ``feed-resumed`` alert.
    """

    expectations: Mapping[str, timedelta]
    started_at: datetime
    last_seen: dict[str, datetime] = field(default_factory=dict)
    _silent: set[str] = field(default_factory=set)

    def observe(self, provider: str, at: datetime) -> None:
        """Record a message from ``provider`` received at ``at``."""
        previous = self.last_seen.get(provider)
        if previous is None or at > previous:
            self.last_seen[provider] = at

    @property
    def silent(self) -> frozenset[str]:
        """Providers currently flagged silent."""
        return frozenset(self._silent)

    def check(self, now: datetime) -> list[OpsAlert]:
        """Alerts due at ``now``: newly silent feeds, and silent feeds heard again."""
        alerts: list[OpsAlert] = []
        for provider in sorted(self.expectations):
            interval = self.expectations[provider]
            seen = self.last_seen.get(provider)
            quiet = now - (seen or self.started_at) > interval
            if quiet and provider not in self._silent:
                self._silent.add(provider)
                alerts.append(OpsAlert("feed-silent", provider, now, seen, interval))
            elif not quiet and provider in self._silent:
                self._silent.discard(provider)
                alerts.append(OpsAlert("feed-resumed", provider, now, seen, interval))
        return alerts


async def run_feedwatch(
    settings: Settings,
    expectations: Mapping[str, timedelta],
    *,
    stop: asyncio.Event,
    metrics: Metrics | None = None,
    check_interval_s: float = 10.0,
    retry_s: float = 5.0,
    clock: Callable[[], float] = time.time,
) -> None:
    """Tail the raw topic and publish ops alerts for silent feeds until ``stop`` is set.

    Reads from ``now - max(expected intervals)`` so feeds heard recently are known at
    start. Kafka errors are logged and retried after ``retry_s``; what was seen is
    kept across reconnects, so a silence is reported once, and an alert Kafka did not
    acknowledge is sent again after reconnecting.
    """
    from aiokafka.errors import KafkaError

    if not expectations:
        log.info("feedwatch.idle", reason="no provider has an expected_interval")
        await stop.wait()
        return
    now = datetime.fromtimestamp(clock(), UTC)
    watch = FeedWatch(expectations, started_at=now)
    since_ms = int((now - max(expectations.values())).timestamp() * 1000)
    unsent: list[OpsAlert] = []  # raised but not yet acknowledged by Kafka
    while not stop.is_set():
        try:
            since_ms = await _watch(
                settings,
                watch,
                since_ms,
                stop=stop,
                unsent=unsent,
                metrics=metrics,
                check_interval_s=check_interval_s,
                clock=clock,
            )
        except KafkaError as exc:
            log.warning("feedwatch.kafka_error", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_s)


async def _watch(
    settings: Settings,
    watch: FeedWatch,
    since_ms: int,
    *,
    stop: asyncio.Event,
    unsent: list[OpsAlert],
    metrics: Metrics | None,
    check_interval_s: float,
    clock: Callable[[], float],
) -> int:
    """One connection's worth of watching; returns the timestamp to resume from."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    from carebus.kafka import aiokafka_config

    topics = TopicNames.from_settings(settings.topics)
    cfg = aiokafka_config(settings)
    consumer = AIOKafkaConsumer(**cfg, enable_auto_commit=False, group_id=None)
    producer = AIOKafkaProducer(**cfg, acks="all")
    admin = AIOKafkaAdminClient(**cfg)
    try:
        await admin.start()
        await consumer.start()
        await producer.start()
        parts = await _assign(consumer, admin, topics.raw, since_ms)
        next_check = clock()
        while not stop.is_set():
            if parts:
                batches = await consumer.getmany(timeout_ms=500)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                batches = {}
            for records in batches.values():
                for rec in records:
                    since_ms = max(since_ms, rec.timestamp)
                    sender = header(rec.headers, SENDER_HEADER)
                    if sender:
                        watch.observe(sender, received_at(rec.headers, rec.timestamp))
            if clock() < next_check:
                continue
            next_check = clock() + check_interval_s
            if not parts:
                parts = await _assign(consumer, admin, topics.raw, since_ms)
            unsent.extend(watch.check(datetime.fromtimestamp(clock(), UTC)))
            while unsent:
                alert = unsent[0]
                await producer.send_and_wait(
                    topics.ops, alert.to_bytes(), key=alert.provider.encode("utf-8")
                )
                unsent.pop(0)
                log.warning("feedwatch.alert", kind=alert.kind, provider=alert.provider)
                if metrics is not None:
                    metrics.ops_alert_raised(alert.kind)
            if metrics is not None:
                for provider in watch.expectations:
                    metrics.set_feed_silent(provider, provider in watch.silent)
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.close()
    return since_ms


async def _assign(consumer: Any, admin: Any, topic: str, since_ms: int) -> list[Any]:
    """Assign every partition of ``topic``, each positioned at ``since_ms``; [] if absent."""
    from aiokafka import TopicPartition

    described = await admin.describe_topics([topic])
    ids = sorted(
        p["partition"] for d in described if d.get("error_code") == 0 for p in d["partitions"]
    )
    if not ids:
        log.warning("feedwatch.no_raw_topic", topic=topic)
        return []
    parts = [TopicPartition(topic, p) for p in ids]
    consumer.assign(parts)
    found = await consumer.offsets_for_times(dict.fromkeys(parts, since_ms))
    ends = await consumer.end_offsets(parts)
    for tp in parts:
        hit = found.get(tp)
        consumer.seek(tp, hit.offset if hit is not None else ends[tp])
    return parts
