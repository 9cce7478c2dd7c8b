"""Helpers for the live worker tests: run ``carebus worker``, feed events, read alerts.

The worker runs as a real subprocess (``python -m carebus worker``) with its settings
in ``CAREBUS_*`` variables; every process started is killed at the end of the test.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

import schemas.codec
from carebus.kafka import kafka_python_config
from carebus.settings import Settings
from carebus.topics import TopicNames
from connectors.hl7.framing import iter_feed
from connectors.hl7.parse import parse_message
from connectors.translate import translate
from streams.app import prepare_topics
from streams.delivery import ALERT_SCHEMA, dedup_key_of
from streams.region import load_region

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = REPO_ROOT.parent / "shared" / "spec" / "examples"
REGION = EXAMPLES / "region.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """``CAREBUS_*`` variables that reproduce ``settings`` (sections that differ from defaults)."""
    env: dict[str, str] = {}
    defaults = Settings()
    for section in dataclasses.fields(Settings):
        ours, theirs = getattr(settings, section.name), getattr(defaults, section.name)
        for f in dataclasses.fields(ours):
            value = getattr(ours, f.name)
            if value != getattr(theirs, f.name) and value is not None:
                env[f"CAREBUS_{section.name.upper()}_{f.name.upper()}"] = str(value)
    env["CAREBUS_KAFKA_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
    return env


@dataclass
class Workers:
    """``carebus worker`` subprocesses of one test; :meth:`close` kills what is left."""

    settings: Settings
    log_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def prepare_topics(self) -> None:
        """Create the topics (as ``carebus topics apply`` would) before any event is sent."""
        prepare_topics(self.settings, load_region(REGION).providers)

    def start(self, settings: Settings | None = None, **worker: Any) -> subprocess.Popen[bytes]:
        """Start a worker with the test's settings (or ``settings``, for a second one);
        ``worker`` overrides its worker settings for this one process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")}
        env.update(settings_env(settings or self.settings))
        env.update({f"CAREBUS_WORKER_{name.upper()}": str(v) for name, v in worker.items()})
        env["CAREBUS_LOG_FORMAT"] = "json"
        log = (self.log_dir / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "carebus", "worker"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL: no shutdown, no final commit, no flush."""
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
        """SIGTERM, and wait for a clean exit."""
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout_s)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def log(self, index: int = -1) -> str:
        return (self.log_dir / f"worker-{index % len(self.procs)}.log").read_text(errors="replace")


def example_events(*names: str) -> list[tuple[str, bytes]]:
    """(key, Avro value) of every event of the named example feeds, in order."""
    out: list[tuple[str, bytes]] = []
    for name in names:
        data = (EXAMPLES / f"{name}.hl7").read_bytes()
        for item in iter_feed(data):
            message = parse_message(item.raw)
            for event in translate(message, raw=item.raw, received_time=datetime.now(UTC)):
                out.append((event.key, schemas.codec.encode(event.schema, event.record)))
    return out


def producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(**kafka_python_config(settings), acks="all", linger_ms=5)


def produce(settings: Settings, events: Iterable[tuple[str, bytes]]) -> int:
    """Publish (key, value) events to the events topic; returns how many."""
    topic = TopicNames.from_settings(settings.topics).events
    p = producer(settings)
    count = 0
    try:
        for key, value in events:
            p.send(topic, key=key.encode("utf-8"), value=value)
            count += 1
        p.flush(30)
    finally:
        p.close()
    return count


@dataclass(frozen=True)
class AlertRecord:
    partition: int
    offset: int
    key: str | None
    dedup_key: str
    record: dict[str, Any]


def read_topic(settings: Settings, topic: str) -> list[AlertRecord]:
    """Every committed alert record of ``topic`` now (read_committed, to the end)."""
    consumer = KafkaConsumer(
        **kafka_python_config(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[AlertRecord] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    name, record = schemas.codec.decode(r.value)
                    assert name == ALERT_SCHEMA
                    key = dedup_key_of(r.value, r.headers)
                    assert key == record["dedup_key"]
                    out.append(
                        AlertRecord(
                            tp.partition,
                            r.offset,
                            r.key.decode() if r.key is not None else None,
                            key,
                            record,
                        )
                    )
        return out
    finally:
        consumer.close()


def wait_for(
    settings: Settings, topic: str, done: Any, *, timeout_s: float, poll_s: float = 0.5
) -> list[AlertRecord]:
    """Read ``topic`` until ``done(records)`` is true; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_topic(settings, topic)
        if done(records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: {len(records)} records, condition not met")
        time.sleep(poll_s)


def keys(records: Iterable[AlertRecord]) -> list[str]:
    return [r.dedup_key for r in records]


#: The token test workers' alert lookup answers to (``worker.web_token_file``).
WEB_TOKEN = "test-web-token"


def worker_settings(kafka: Settings, prefix: str, data_dir: Path, **worker: Any) -> Settings:
    """Settings for a test worker: its own topics, app id, ports, data directory and token."""
    topics = dataclasses.replace(kafka.topics, prefix=prefix, partitions=2)
    token_file = data_dir.parent / f"{data_dir.name}.web-token"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(WEB_TOKEN + "\n")
    worker.setdefault("web_token_file", token_file)
    w = dataclasses.replace(
        kafka.worker,
        app_id=f"{prefix}-worker",
        data_dir=data_dir,
        region_config=REGION,
        tick_interval_s=1.0,
        session_timeout_s=6.0,
        web_port=free_port(),
        **worker,
    )
    metrics = dataclasses.replace(kafka.metrics, worker_port=free_port())
    return kafka.replace(topics=topics, worker=w, metrics=metrics)


def iter_lines(text: str) -> Iterator[str]:
    yield from (line for line in text.splitlines() if line.strip())
