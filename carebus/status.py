"""Stream health at a glance: offsets, lag, dead letters, feeds, the live clock and alerts.

:class:`Tally` is the pure part: fed the records of the raw, dead-letter and alert
topics one at a time (headers and timestamps; alert values are decoded only for
their rule id), it counts what ops need and never keeps a patient identifier or a
message body. :func:`collect_status` is the Kafka part: it reads a time window of
those topics plus end offsets and committed consumer-group offsets with
kafka-python, and returns a :class:`StatusReport` that ``carebus status`` prints
as a table (:func:`format_table`) or as JSON (:meth:`StatusReport.to_json`). The
dashboard keeps a :class:`Tally` up to date by tailing the same topics.

The live clock (:class:`ClockHold`): the ``carebus.events.FeedWatermark`` records
of the events topic's last ``feed_idle_minutes`` (region config, default 5) tell,
as the workers read them, how far each provider still sending has been stored;
the one furthest behind the wall clock holds the workers' clock back.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from carebus.errors import KafkaUnavailable
from carebus.feedwatch import SENDER_HEADER, header, received_at
from carebus.settings import Settings
from carebus.topics import TopicNames

REASON_HEADER = "carebus-reason"
#: Reason shown for dead letters without a ``carebus-reason`` header.
NO_REASON = "unspecified"
#: Rule shown for alert records that cannot be decoded.
UNDECODABLE = "undecodable"
#: Sender shown for raw/dead-letter records without a ``carebus-sender`` header.
NO_SENDER = "unknown"
#: The header naming a record's schema, and the one of the feed watermarks.
SCHEMA_HEADER = "carebus-schema"
WATERMARK_SCHEMA = "carebus.events.FeedWatermark"
#: A provider that sent nothing for this long no longer holds the live clock back.
DEFAULT_FEED_IDLE = timedelta(minutes=5)

Headers = Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True)
class FeedStatus:
    """One sending provider's feed: volume, recent rate and last message time."""

    provider: str
    messages: int
    rejected: int
    last_seen: datetime | None
    expected_interval: timedelta | None
    quiet: bool
    rate_per_minute: float

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "messages": self.messages,
            "rejected": self.rejected,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "expected_interval_s": (
                self.expected_interval.total_seconds() if self.expected_interval else None
            ),
            "quiet": self.quiet,
            "rate_per_minute": round(self.rate_per_minute, 3),
        }


@dataclass(frozen=True)
class ClockHold:
    """A provider still sending whose watermark is behind the wall clock."""

    provider: str
    watermark: datetime
    behind: timedelta
    #: True for the provider furthest behind: the one the live clock waits for
    holds_clock: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "watermark": self.watermark.isoformat(),
            "behind_s": self.behind.total_seconds(),
            "holds_clock": self.holds_clock,
        }


@dataclass
class Tally:
    """Running counts over carebus's topics (pure; the caller supplies ``now``).

    ``rate_window`` is the span :meth:`feeds` averages ``rate_per_minute`` over.
    """

    rate_window: timedelta = timedelta(minutes=5)
    received: Counter[str] = field(default_factory=Counter)
    last_seen: dict[str, datetime] = field(default_factory=dict)
    deadletters: Counter[str] = field(default_factory=Counter)
    deadletters_by_provider: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    #: provider -> [latest watermark, latest last_received] over the sources read
    watermarks: dict[str, list[datetime]] = field(default_factory=dict)
    _recent: dict[str, deque[datetime]] = field(default_factory=dict)

    def add_raw(self, headers: Headers | None, timestamp_ms: int) -> None:
        """Count one raw-topic record (a message received from a sender)."""
        provider = header(headers, SENDER_HEADER) or NO_SENDER
        at = received_at(headers, timestamp_ms)
        self.received[provider] += 1
        if provider not in self.last_seen or at > self.last_seen[provider]:
            self.last_seen[provider] = at
        recent = self._recent.setdefault(provider, deque())
        recent.append(at)
        horizon = self.last_seen[provider] - self.rate_window
        while recent and recent[0] < horizon:
            recent.popleft()

    def add_deadletter(self, headers: Headers | None) -> None:
        """Count one dead-letter record by its ``carebus-reason`` and sender."""
        self.deadletters[header(headers, REASON_HEADER) or NO_REASON] += 1
        self.deadletters_by_provider[header(headers, SENDER_HEADER) or NO_SENDER] += 1

    def add_alert(self, value: bytes | None) -> None:
        """Count one alert record by its rule (decoded; the patient is never kept)."""
        from schemas.codec import decode

        try:
            _schema, record = decode(value or b"")
            rule = str(record["rule"])
        except Exception:  # any undecodable record is counted, never fatal
            rule = UNDECODABLE
        self.alerts[rule] += 1

    def add_watermark(self, headers: Headers | None, value: bytes | None) -> None:
        """Take in one events-topic record if it is a feed watermark (others are skipped
        by their ``carebus-schema`` header, never decoded)."""
        if header(headers, SCHEMA_HEADER) != WATERMARK_SCHEMA:
            return
        from schemas.codec import decode

        try:
            schema, record = decode(value or b"")
            if schema != WATERMARK_SCHEMA:
                return
            provider = str(record["provider"])
            event_time, received = record["event_time"], record["last_received"]
        except Exception:  # a bad record is not the status command's problem
            return
        held = self.watermarks.get(provider)
        if held is None:
            self.watermarks[provider] = [event_time, received]
        else:
            held[0], held[1] = max(held[0], event_time), max(held[1], received)

    def clock(self, now: datetime, idle: timedelta = DEFAULT_FEED_IDLE) -> list[ClockHold]:
        """Providers still sending (heard within ``idle``) whose watermark is behind
        ``now``, furthest behind first; the first holds the live clock."""
        behind = sorted(
            (now - wm, provider, wm)
            for provider, (wm, received) in self.watermarks.items()
            if now - received < idle and wm < now
        )
        behind.reverse()
        return [
            ClockHold(provider, wm, lag, holds_clock=i == 0)
            for i, (lag, provider, wm) in enumerate(behind)
        ]

    def feeds(
        self,
        now: datetime,
        expectations: Mapping[str, timedelta | None] | None = None,
        *,
        since: datetime | None = None,
    ) -> list[FeedStatus]:
        """Every provider seen or expected, sorted by code, with quiet feeds flagged.

        A feed is quiet when its last message is older than its expected interval; a
        feed not seen at all is quiet when the records read (from ``since``) span
        more than its interval, or when ``since`` is unknown.
        """
        expectations = expectations or {}
        out = []
        window_minutes = self.rate_window.total_seconds() / 60
        for provider in sorted(set(self.received) | set(expectations)):
            interval = expectations.get(provider)
            seen = self.last_seen.get(provider)
            last = seen or since
            quiet = interval is not None and (last is None or now - last > interval)
            recent = sum(1 for t in self._recent.get(provider, ()) if t >= now - self.rate_window)
            out.append(
                FeedStatus(
                    provider=provider,
                    messages=self.received[provider],
                    rejected=self.deadletters_by_provider[provider],
                    last_seen=seen,
                    expected_interval=interval,
                    quiet=quiet,
                    rate_per_minute=recent / window_minutes,
                )
            )
        return out


@dataclass(frozen=True)
class TopicStatus:
    """A topic's end offset per partition."""

    topic: str
    end_offsets: Mapping[int, int]

    @property
    def total(self) -> int:
        return sum(self.end_offsets.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partitions": len(self.end_offsets),
            "end_offsets": {str(p): o for p, o in sorted(self.end_offsets.items())},
            "total": self.total,
        }


@dataclass(frozen=True)
class GroupLag:
    """One consumer group's committed offset and lag on one topic-partition."""

    group: str
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(self.end - self.committed, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
        }


@dataclass(frozen=True)
class StatusReport:
    """Everything ``carebus status`` shows."""

    generated_at: datetime
    since: datetime
    topics: Sequence[TopicStatus]
    lag: Sequence[GroupLag]
    feeds: Sequence[FeedStatus]
    deadletters: Mapping[str, int]
    alerts: Mapping[str, int]
    #: providers holding the live clock back (empty: it is the wall clock)
    clock: Sequence[ClockHold] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at.isoformat(),
            "since": self.since.isoformat(),
            "topics": [t.to_json() for t in self.topics],
            "lag": [g.to_json() for g in self.lag],
            "feeds": [f.to_json() for f in self.feeds],
            "clock": [c.to_json() for c in self.clock],
            "deadletters": {
                "total": sum(self.deadletters.values()),
                "reasons": [{"reason": r, "count": c} for r, c in _top(self.deadletters)],
            },
            "alerts": {
                "total": sum(self.alerts.values()),
                "rules": [{"rule": r, "count": c} for r, c in _top(self.alerts)],
            },
        }


def _top(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """Most frequent first, ties by name."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def report_from_tally(
    tally: Tally,
    *,
    now: datetime,
    since: datetime,
    topics: Sequence[TopicStatus] = (),
    lag: Sequence[GroupLag] = (),
    expectations: Mapping[str, timedelta | None] | None = None,
    feed_idle: timedelta = DEFAULT_FEED_IDLE,
) -> StatusReport:
    """Assemble a :class:`StatusReport` from a tally and Kafka offsets."""
    return StatusReport(
        generated_at=now,
        since=since,
        topics=list(topics),
        lag=list(lag),
        feeds=tally.feeds(now, expectations, since=since),
        deadletters=dict(tally.deadletters),
        alerts=dict(tally.alerts),
        clock=tally.clock(now, feed_idle),
    )


# ---------------------------------------------------------------- Kafka I/O


def _kafka_error() -> type[Exception]:
    from kafka.errors import KafkaError

    return KafkaError  # type: ignore[no-any-return]


def carebus_topics(settings: Settings, admin: Any) -> list[str]:
    """The topics on the cluster that belong to this carebus (by prefix), sorted."""
    prefix = TopicNames.from_settings(settings.topics).prefix + "."
    return sorted(t for t in admin.list_topics() if t.startswith(prefix))


def end_offsets(consumer: Any, topics: Iterable[str]) -> list[TopicStatus]:
    """End offsets of every partition of ``topics``."""
    from kafka import TopicPartition

    parts = [
        TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())
    ]
    ends = consumer.end_offsets(parts) if parts else {}
    by_topic: dict[str, dict[int, int]] = {t: {} for t in topics}
    for tp, offset in ends.items():
        by_topic[tp.topic][tp.partition] = offset
    return [TopicStatus(t, by_topic[t]) for t in topics]


def group_lag(admin: Any, topics: Sequence[TopicStatus]) -> list[GroupLag]:
    """Committed offsets and lag of every consumer group on ``topics``."""
    ends = {(t.topic, p): o for t in topics for p, o in t.end_offsets.items()}
    groups = sorted(g["group_id"] for g in admin.list_groups())
    if not groups:
        return []
    out: list[GroupLag] = []
    for group, offsets in sorted(admin.list_group_offsets(groups).items()):
        for tp, meta in offsets.items():
            end = ends.get((tp.topic, tp.partition))
            if end is None or meta.offset < 0:
                continue
            out.append(GroupLag(group, tp.topic, tp.partition, meta.offset, end))
    return sorted(out, key=lambda g: (g.group, g.topic, g.partition))


def read_window(
    consumer: Any,
    tally: Tally,
    names: TopicNames,
    since: datetime,
    *,
    timeout_s: float = 60.0,
    clock_since: datetime | None = None,
) -> None:
    """Feed ``tally`` every raw, dead-letter and alert record from ``since`` to the end,
    and the events topic's feed watermarks from ``clock_since`` (None: not read)."""
    from kafka import TopicPartition

    topics = [names.raw, names.deadletter, names.alerts]
    if clock_since is not None:
        topics.append(names.events)
    parts = [
        TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())
    ]
    if not parts:
        return
    consumer.assign(parts)
    ends = consumer.end_offsets(parts)
    found = consumer.offsets_for_times(
        {
            tp: int(
                (clock_since if tp.topic == names.events and clock_since else since).timestamp()
                * 1000
            )
            for tp in parts
        }
    )
    pending = set()
    for tp in parts:
        hit = found.get(tp)
        start = hit.offset if hit is not None else ends[tp]
        consumer.seek(tp, start)
        if start < ends[tp]:
            pending.add(tp)
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise KafkaUnavailable(f"reading topics did not finish within {timeout_s:g} s")
        for tp, records in consumer.poll(timeout_ms=500, max_records=2000).items():
            for rec in records:
                if rec.offset >= ends[tp]:
                    continue
                if tp.topic == names.raw:
                    tally.add_raw(rec.headers, rec.timestamp)
                elif tp.topic == names.deadletter:
                    tally.add_deadletter(rec.headers)
                elif tp.topic == names.events:
                    tally.add_watermark(rec.headers, rec.value)
                else:
                    tally.add_alert(rec.value)
        for tp in list(pending):
            if consumer.position(tp) >= ends[tp]:
                pending.discard(tp)


def collect_status(
    settings: Settings,
    *,
    now: datetime,
    since: datetime,
    expectations: Mapping[str, timedelta | None] | None = None,
    timeout_s: float = 60.0,
    feed_idle: timedelta = DEFAULT_FEED_IDLE,
) -> StatusReport:
    """Read offsets, lag and the ``since`` window of carebus's topics from Kafka (and the
    last ``feed_idle`` of the events topic's feed watermarks)."""
    from kafka import KafkaAdminClient, KafkaConsumer

    from carebus.kafka import kafka_python_config

    names = TopicNames.from_settings(settings.topics)
    cfg = kafka_python_config(settings)
    admin = consumer = None
    try:
        admin = KafkaAdminClient(**cfg)
        consumer = KafkaConsumer(**cfg, group_id=None, enable_auto_commit=False)
        topics = end_offsets(consumer, carebus_topics(settings, admin))
        lag = group_lag(admin, topics)
        tally = Tally()
        read_window(consumer, tally, names, since, timeout_s=timeout_s, clock_since=now - feed_idle)
    except _kafka_error() as exc:
        raise KafkaUnavailable(f"cannot read stream status: {type(exc).__name__}") from exc
    finally:
        if consumer is not None:
            consumer.close()
        if admin is not None:
            admin.close()
    return report_from_tally(
        tally,
        now=now,
        since=since,
        topics=topics,
        lag=lag,
        expectations=expectations,
        feed_idle=feed_idle,
    )


# --------------------------------------------------------------- rendering


def _ago(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "never"
    seconds = max(int((now - then).total_seconds()), 0)
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    if seconds < 172800:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def _every(interval: timedelta | None) -> str:
    if interval is None:
        return "-"
    seconds = int(interval.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table(headings: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headings)]
    line = "  ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return out


def _span(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def clock_line(report: StatusReport) -> str:
    """One line: who holds the workers' live clock back, and by how much."""
    held = [c for c in report.clock if c.holds_clock]
    if not held:
        return "CLOCK: the wall clock (no provider still sending is behind it)"
    c = held[0]
    others = len(report.clock) - 1
    more = f"; {others} more provider(s) behind" if others else ""
    return (
        f"CLOCK: held back {_span(c.behind)} by {c.provider} "
        f"(its watermark {c.watermark.isoformat()}){more}"
    )


def format_table(report: StatusReport, *, top_reasons: int = 5) -> str:
    """The report as plain-text tables for a terminal."""
    now = report.generated_at
    lines = [f"carebus status at {now.isoformat()} (records since {report.since.isoformat()})"]
    lines += ["", "TOPICS"]
    lines += _table(
        ["topic", "partitions", "end offsets (sum)"],
        [[t.topic, len(t.end_offsets), t.total] for t in report.topics],
    )
    lines += ["", "CONSUMER LAG"]
    lags: dict[tuple[str, str], list[GroupLag]] = {}
    for g in report.lag:
        lags.setdefault((g.group, g.topic), []).append(g)
    lines += _table(
        ["group", "topic", "partitions", "lag", "max partition lag"],
        [
            [grp, topic, len(v), sum(x.lag for x in v), max(x.lag for x in v)]
            for (grp, topic), v in sorted(lags.items())
        ],
    )
    lines += ["", "FEEDS"]
    lines += _table(
        ["provider", "messages", "rejected", "last seen", "expected", "state"],
        [
            [
                f.provider,
                f.messages,
                f.rejected,
                _ago(now, f.last_seen),
                _every(f.expected_interval),
                "QUIET" if f.quiet else "ok",
            ]
            for f in report.feeds
        ],
    )
    lines += ["", clock_line(report)]
    dl = _top(report.deadletters)
    lines += ["", f"DEAD LETTERS: {sum(report.deadletters.values())}"]
    lines += _table(["reason", "count"], [list(x) for x in dl[:top_reasons]])
    lines += ["", f"ALERTS: {sum(report.alerts.values())}"]
    lines += _table(["rule", "count"], [list(x) for x in _top(report.alerts)])
    return "\n".join(lines) + "\n"
