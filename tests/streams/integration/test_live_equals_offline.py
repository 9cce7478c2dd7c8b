"""Live equals offline (issue #17): a historical feed replayed over MLLP into a fresh
listener and worker gives exactly the alerts ``carebus simulate`` gives for it.

Everything runs as real processes on the session broker, each test with its own topic
prefix, consumer group, ports and region config (``carebus generate --region-out``):
``carebus topics apply``, ``carebus listen``, ``carebus worker`` and ``carebus replay``.

**Which ``--until``.** The feed's event times are historical (January 2026). Live, the
clock is the lowest watermark among the providers still sending, and the wall clock
once none is (rules spec 1.1, "Clock"). The tests let every provider go idle after the
feed: the region config sets ``feed_idle_minutes`` to one minute, the tests wait (on the
worker's ``carebus_worker_clock_behind_seconds``, which no provider holds once they are
all idle) until the worker's clock is the wall clock, and then until the worker has
committed the end of the events topic and a few more ticks of every control partition.
Every deadline up to now has then fired, so the alerts are compared with
``carebus simulate --until <now>`` taken after the alerts were read (the feed's
last deadlines fall in February 2026: none falls between the worker's last tick and now).
A minute is far longer than any gap in a provider's sending while a feed is being
replayed at tens of messages a second, so no provider goes idle half-way.

The worker is SIGKILLed once the first alerts are on the alert topic (the replay, paced
at 20 messages a second, is then normally still sending; the test does not depend on
it) and started again: its state and offsets come back from Kafka, and no alert may be
missing, extra or published twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from carebus.kafka import kafka_python_config
from carebus.settings import Settings
from carebus.topics import TopicNames
from streams.app import control_topic_name
from tests.streams.integration.live import (
    REPO_ROOT,
    free_port,
    keys,
    read_topic,
    settings_env,
    worker_settings,
)

pytestmark = pytest.mark.integration

MESSAGES = 1000
SEED = 7
#: Long enough to be sure every provider still sending is "sending", short enough to wait.
FEED_IDLE_MINUTES = 1
#: Generous bounds on waits (the conditions themselves decide when to go on).
WAIT_S = 600.0


@dataclass
class Region:
    """One region's processes (listener, workers, replays) and their logs."""

    settings: Settings
    tmp: Path
    env: dict[str, str]
    mllp_port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        """``carebus ARGS`` to its end; its output kept."""
        return subprocess.run(
            [sys.executable, "-m", "carebus", *args],
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            timeout=WAIT_S,
            check=True,
        )

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / "logs" / f"{name}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "carebus", *args],
            env=self.env,
            cwd=self.tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def start_worker(self) -> subprocess.Popen[bytes]:
        proc = self.start("worker", "worker")
        self.workers.append(proc)
        return proc

    def replay(self, feed: Path, rate: int) -> subprocess.Popen[bytes]:
        """``carebus replay`` of ``feed`` at ``rate`` messages a second, one connection."""
        return self.start(
            "replay", "replay", "--port", str(self.mllp_port), "--rate", str(rate),
            "--retries", "20", str(feed),
        )  # fmt: skip

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((self.tmp / "logs").iterdir())
        )


@pytest.fixture
def region(kafka: Settings, unique_topic_prefix: str, tmp_path: Path) -> Iterator[Region]:
    (tmp_path / "logs").mkdir()
    feed, region_yaml = tmp_path / "feed.hl7", tmp_path / "region.yaml"
    settings = worker_settings(kafka, unique_topic_prefix, tmp_path / "data")
    settings = settings.replace(
        worker=dataclasses.replace(settings.worker, region_config=region_yaml)
    )
    mllp_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")}
    env.update(settings_env(settings))
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "CAREBUS_MLLP_PORT": str(mllp_port),
            "CAREBUS_METRICS_LISTENER_PORT": str(free_port()),
            "CAREBUS_LOG_FORMAT": "json",
        }
    )
    running = Region(settings, tmp_path, env, mllp_port)
    running.run(
        "generate", "--messages", str(MESSAGES), "--seed", str(SEED), "--out", str(feed),
        "--region-out", str(region_yaml),
    )  # fmt: skip
    with region_yaml.open("a") as config:
        config.write(f"\nfeed_idle_minutes: {FEED_IDLE_MINUTES}\n")
    running.run("topics", "apply")
    try:
        yield running
    finally:
        running.close()


def wait_until(condition: Callable[[], bool], what: str, region: Region) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {WAIT_S:g} s\n{region.logs()}")
        time.sleep(0.5)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def committed(s: Settings) -> dict[TopicPartition, int]:
    admin = KafkaAdminClient(**kafka_python_config(s))
    try:
        offsets = admin.list_group_offsets([s.worker.app_id]).get(s.worker.app_id, {})
    except KafkaError as exc:  # the group's coordinator is still starting
        if not exc.retriable:
            raise
        return {}
    finally:
        admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


def end_offsets(s: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(**kafka_python_config(s), group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        return dict(consumer.end_offsets(tps))
    finally:
        consumer.close()


def caught_up(s: Settings, region: Region, ticks: int = 3) -> None:
    """Wait until the worker has committed every events partition up to its end as it
    is now, and then ``ticks`` more records (its ticks) of every control partition."""
    events = end_offsets(s, TopicNames.from_settings(s.topics).events)
    wait_until(
        lambda: all(committed(s).get(tp, -1) >= end for tp, end in events.items()),
        "the worker commits the events topic's end",
        region,
    )
    control = {tp: committed(s).get(tp, 0) for tp in end_offsets(s, control_topic_name(s))}
    wait_until(
        lambda: all(committed(s).get(tp, -1) >= at + ticks for tp, at in control.items()),
        "the worker ticks",
        region,
    )


_BEHIND = re.compile(r'^carebus_worker_clock_behind_seconds\{provider="([^"]+)"\} (\S+)$', re.M)


def clock_behind(s: Settings) -> dict[str, float] | None:
    """The worker's ``carebus_worker_clock_behind_seconds`` per provider (None: no answer)."""
    url = f"http://127.0.0.1:{s.metrics.worker_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    return {provider: float(value) for provider, value in _BEHIND.findall(text)}


def wait_for_wall_clock(s: Settings, region: Region) -> None:
    """Wait until the worker read the feeds' watermarks (some provider holds its clock
    back) and then until every provider went idle (none holds it: the wall clock)."""
    caught_up(s, region)
    wait_until(
        lambda: any((clock_behind(s) or {}).values()),
        "a provider holds the clock back after the feed",
        region,
    )
    wait_until(
        lambda: (behind := clock_behind(s)) is not None and not any(behind.values()),
        "every provider idle: the worker's clock is the wall clock",
        region,
    )
    caught_up(s, region)


def simulate(region: Region, until: datetime) -> list[dict[str, object]]:
    """``carebus simulate feed.hl7 --until UNTIL``: its alerts, in order."""
    done = region.run(
        "simulate", str(region.tmp / "feed.hl7"), "--config", str(region.tmp / "region.yaml"),
        "--until", until.isoformat(),
    )  # fmt: skip
    return [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]


def assert_same_alerts(live_keys: list[str], offline: list[dict[str, object]], keep: Path) -> None:
    """Same dedup keys, none twice live; both sides kept in ``keep`` to look into."""
    (keep / "live-keys.json").write_text(json.dumps(live_keys, indent=0))
    (keep / "offline-alerts.json").write_text(json.dumps(offline, indent=0))
    offline_keys = [str(a["dedup_key"]) for a in offline]
    assert len(set(offline_keys)) == len(offline_keys), "simulate repeated a dedup key"
    duplicates = [k for k, n in Counter(live_keys).items() if n > 1]
    missing = sorted(set(offline_keys) - set(live_keys))
    extra = sorted(set(live_keys) - set(offline_keys))
    by_rule = Counter(f"{'-' if k in missing else '+'}{k.split(':')[0]}" for k in missing + extra)
    assert (missing, extra, duplicates) == ([], [], []), (
        f"{len(missing)} missing, {len(extra)} extra, {len(duplicates)} duplicated of "
        f"{len(offline_keys)} expected, by rule {dict(by_rule)}: missing {missing[:20]} "
        f"extra {extra[:20]} duplicated {duplicates[:20]}"
    )
    assert len(offline_keys) > 100  # a feed that exercises the rules


class TestLiveEqualsOffline:
    def test_a_feed_replayed_with_a_worker_killed_half_way_gives_simulates_alerts(
        self, region: Region
    ) -> None:
        """One sender; the worker SIGKILLed once alerts have appeared and started again:
        the alert topic holds every alert of ``simulate --until <now>``, no other, and no
        dedup key twice."""
        s = region.settings
        names = TopicNames.from_settings(s.topics)
        region.start("listener", "listen")
        wait_until(lambda: _listener_ready(region), "listener ready", region)
        worker = region.start_worker()
        replay = region.replay(region.tmp / "feed.hl7", rate=20)
        wait_until(lambda: len(read_topic(s, names.alerts)) >= 10, "the first alerts", region)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        region.start_worker()
        wait_until(lambda: replay.poll() is not None, "the replay ends", region)
        assert replay.returncode == 0, region.logs()

        wait_for_wall_clock(s, region)
        live = read_topic(s, names.alerts)
        assert_same_alerts(keys(live), simulate(region, datetime.now(UTC)), region.tmp)


def _listener_ready(region: Region) -> bool:
    return ready(int(region.env["CAREBUS_METRICS_LISTENER_PORT"]))
