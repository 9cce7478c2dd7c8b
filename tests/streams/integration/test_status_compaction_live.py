"""The alert-status topic under compaction, with real workers on a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

import schemas.codec
from carebus.kafka import kafka_python_config
from carebus.settings import Settings
from carebus.topics import TopicNames
from streams.status import body_key
from tests.streams.integration.live import (
    REPO_ROOT,
    Workers,
    example_events,
    produce,
    settings_env,
    wait_for,
    worker_settings,
)
from tests.streams.integration.test_engine_errors_live import read_raw

pytestmark = pytest.mark.integration


@pytest.fixture
def workers(kafka: Settings, unique_topic_prefix: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(worker_settings(kafka, unique_topic_prefix, tmp_path / "data"), tmp_path)
    w.prepare_topics()
    try:
        yield w
    finally:
        w.close()


def carebus(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")}
    env.update(settings_env(settings))
    return subprocess.run(
        [sys.executable, "-m", "carebus", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def show_until(settings: Settings, key: str, done: Any, timeout_s: float = 60) -> dict[str, Any]:
    """``carebus alerts show`` until ``done(body)``; the last body (asserted by the caller)."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        shown = carebus(settings, "alerts", "show", key)
        if shown.stdout.strip():
            body = json.loads(shown.stdout)
            if done(body):
                return body
        time.sleep(0.5)
    return body


class TestStatusCompactionLive:
    def test_a_compacted_status_topic_read_into_a_fresh_worker_keeps_resolved(
        self, workers: Workers, kafka: Settings, unique_topic_prefix: str, tmp_path: Path
    ) -> None:
        """Raise, ack, resolve, then a late ack: RESOLVED, also after a restart; the topic
        compacted (last record per key) and read by a fresh worker gives RESOLVED, with
        the alert's body."""
        s = workers.settings
        names = TopicNames.from_settings(s.topics)
        proc = workers.start()
        produce(s, example_events("E1-hospice-handoff-missed"))
        [alert] = wait_for(s, names.alerts, lambda rs: len(rs) >= 1, timeout_s=90)
        key = alert.dedup_key
        assert show_until(s, key, lambda b: b.get("status") == "OPEN")["status"] == "OPEN"

        for action in ("ack", "resolve", "ack"):
            done = carebus(s, "alerts", action, key, "--by", f"it-{action}")
            assert done.returncode == 0, done.stderr
        body = show_until(s, key, lambda b: len(b.get("history", ())) == 3)
        assert body["status"] == "RESOLVED"
        assert [h["action"] for h in body["history"]] == [
            "ACKNOWLEDGED",
            "RESOLVED",
            "ACKNOWLEDGED",
        ]

        def last_change() -> dict[str, Any] | None:
            changes = [
                schemas.codec.decode(v)[1]
                for _, _, k, v, _ in read_raw(s, names.alert_status)
                if k == key.encode()
            ]
            return changes[-1] if changes else None

        # The worker reasserts the resolution after the late acknowledgement.
        deadline = time.monotonic() + 30
        while (last_change() or {}).get("action") != "RESOLVED" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (last_change() or {}).get("action") == "RESOLVED"

        # A restarted worker (table restored from its changelog) still says RESOLVED.
        assert workers.stop(proc) == 0
        workers.start()
        again = show_until(s, key, lambda b: b.get("status") not in (None, "UNKNOWN"))
        assert again["status"] == "RESOLVED"
        assert len(again["history"]) == 3

        # Compaction's result: the last record of each key, in offset order.
        compacted: dict[tuple[int, bytes | None], tuple[int, bytes, list]] = {}
        for partition, offset, k, v, headers in read_raw(s, names.alert_status):
            compacted[(partition, k)] = (offset, v, headers)
        keys = {k for _, k in compacted}
        assert keys == {key.encode(), body_key(key).encode()}
        assert len({partition for partition, _ in compacted}) == 1  # the dedup key's partition

        fresh = Workers(
            worker_settings(kafka, f"{unique_topic_prefix}-c", tmp_path / "fresh"),
            tmp_path / "fresh-logs",
        )
        (tmp_path / "fresh-logs").mkdir()
        fresh.prepare_topics()
        try:
            f = fresh.settings
            p = KafkaProducer(**kafka_python_config(f), acks="all")
            topic = TopicNames.from_settings(f.topics).alert_status
            for (partition, k), (_, v, headers) in sorted(
                compacted.items(), key=lambda item: item[1][0]
            ):
                p.send(topic, key=k, value=v, partition=partition, headers=headers)
            p.flush(30)
            p.close()
            fresh.start()
            replayed = show_until(f, key, lambda b: b.get("status") not in (None, "UNKNOWN"))
            assert replayed["status"] == "RESOLVED"
            assert replayed["alert"]["rule"] == "hospice-handoff-missed"
            assert replayed["decisive"]["action"] == "RESOLVED"
        finally:
            fresh.close()
