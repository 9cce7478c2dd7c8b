"""The live worker on a real broker: events in, the expected alerts out, status queryable."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from carebus import broker
from carebus.admin import admin_client
from carebus.errors import ConfigError
from carebus.settings import BrokerSettings, Settings
from carebus.topics import TopicNames, apply, declared_topics, ensure
from streams.app import control_topic_name, prepare_topics
from streams.control import partition_for
from tests.streams.integration.live import (
    EXAMPLES,
    REPO_ROOT,
    WEB_TOKEN,
    Workers,
    example_events,
    free_port,
    keys,
    produce,
    read_topic,
    settings_env,
    wait_for,
    worker_settings,
)

pytestmark = pytest.mark.integration

FEEDS = ("E1-hospice-handoff-missed", "E4-death-pending-appointment")


@pytest.fixture
def workers(kafka: Settings, unique_topic_prefix: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(worker_settings(kafka, unique_topic_prefix, tmp_path / "data"), tmp_path)
    w.prepare_topics()
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def own_broker_workers(
    throwaway_broker: BrokerSettings, unique_topic_prefix: str, tmp_path: Path
) -> Iterator[Workers]:
    """Workers on a broker of the test's own, started fresh: on the long-lived session
    broker a joining worker was seen to stall (issue #18, as in the SIGKILL test)."""
    broker.start(throwaway_broker, reset=True)
    kafka = Settings(broker=throwaway_broker)
    w = Workers(worker_settings(kafka, unique_topic_prefix, tmp_path / "data"), tmp_path)
    w.prepare_topics()
    try:
        yield w
    finally:
        w.close()


def expected_alerts() -> set[tuple[str, str, str, tuple[str, ...]]]:
    """(rule, patient, raised_at to the minute, recipients) from the examples' expected files."""
    out = set()
    for name in FEEDS:
        for line in (EXAMPLES / f"{name}.expected.jsonl").read_text().splitlines():
            a = json.loads(line)
            at = datetime.fromisoformat(a["raised_at"].replace("Z", "+00:00"))
            out.add(
                (a["rule"], a["patient"], at.strftime("%Y-%m-%dT%H:%M"), tuple(a["recipients"]))
            )
    return out


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


class TestLiveWorker:
    def test_events_in_expected_alerts_out_on_alert_and_recipient_topics(
        self, workers: Workers
    ) -> None:
        """The examples' events give exactly their expected alerts, once each."""
        s = workers.settings
        names = TopicNames.from_settings(s.topics)
        workers.start()
        produce(s, example_events(*FEEDS))
        want = expected_alerts()

        def summary(records: list) -> set[tuple[str, str, str, tuple[str, ...]]]:
            return {
                (
                    r.record["rule"],
                    r.record["patient"],
                    r.record["raised_at"].strftime("%Y-%m-%dT%H:%M"),
                    tuple(r.record["recipients"]),
                )
                for r in records
            }

        alerts = wait_for(s, names.alerts, lambda rs: summary(rs) >= want, timeout_s=180)
        assert summary(alerts) == want
        assert len(keys(alerts)) == len(set(keys(alerts))) == len(want)
        for record in alerts:
            assert record.key == record.record["patient"]
            assert record.partition == partition_for(record.record["patient"], 2)
        for provider in ("RX1", "G0001"):
            copies = read_topic(s, names.alerts_for(provider))
            assert sorted(keys(copies)) == sorted(
                r.dedup_key for r in alerts if provider in r.record["recipients"]
            )
        status = read_topic(s, names.alert_status)
        assert set(keys(status)) == set(keys(alerts))

    def test_alert_status_can_be_acknowledged_and_shown(self, workers: Workers) -> None:
        """`carebus alerts ack` changes what `carebus alerts show` reports for the alert."""
        s = workers.settings
        names = TopicNames.from_settings(s.topics)
        proc = workers.start()
        produce(s, example_events("E1-hospice-handoff-missed"))
        alerts = wait_for(s, names.alerts, lambda rs: len(rs) >= 1, timeout_s=180)
        key = alerts[0].dedup_key

        deadline = time.monotonic() + 120
        shown = carebus(s, "alerts", "show", key)
        while shown.returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            shown = carebus(s, "alerts", "show", key)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["status"] == "OPEN"

        acked = carebus(s, "alerts", "ack", key, "--by", "integration-test", "--note", "seen")
        assert acked.returncode == 0, acked.stderr
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            body = json.loads(carebus(s, "alerts", "show", key).stdout)
            if body["status"] == "ACKNOWLEDGED":
                break
            time.sleep(0.5)
        assert body["status"] == "ACKNOWLEDGED"
        assert body["history"][0]["by"] == "integration-test"
        assert body["alert"]["rule"] == "hospice-handoff-missed"

        unknown = carebus(s, "alerts", "show", "no-such-alert")
        assert unknown.returncode == 1
        assert json.loads(unknown.stdout)["status"] == "UNKNOWN"
        assert workers.stop(proc) == 0


def get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    """GET ``path`` on a local worker's port: (status, body); status 0 while not listening."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:
        return 0, b""


def alert_path(key: str) -> str:
    return f"/alerts/{urllib.parse.quote(key, safe='')}/"


class TestWorkerWeb:
    def test_faust_pages_are_off_and_the_lookup_needs_the_token(self, workers: Workers) -> None:
        """A running worker answers 404 for Faust's pages and 401, without data, for no token."""
        s = workers.settings
        names = TopicNames.from_settings(s.topics)
        proc = workers.start()
        produce(s, example_events("E1-hospice-handoff-missed"))
        alert = wait_for(s, names.alerts, lambda rs: len(rs) >= 1, timeout_s=60)[0]
        port, patient = s.worker.web_port, alert.record["patient"]
        deadline = time.monotonic() + 30
        while get(port, alert_path(alert.dedup_key), WEB_TOKEN)[0] != 200:
            assert time.monotonic() < deadline, "the alert lookup never answered 200"
            time.sleep(0.5)
        for path in (
            f"/table/patients/{patient}/",
            "/table/",
            "/router/",
            f"/router/patients/{patient}/",
            "/graph/",
            "/stats/",
            "/assignment/",
            "/performance/",
            "/",
        ):
            assert get(port, path, WEB_TOKEN)[0] == 404, path
        for token in (None, "wrong-token", WEB_TOKEN + "x"):
            code, body = get(port, alert_path(alert.dedup_key), token)
            assert code == 401
            assert patient.encode() not in body
            assert json.loads(body) == {"error": "unauthorized"}
        assert workers.stop(proc) == 0

    def test_any_worker_answers_for_every_alert(
        self, own_broker_workers: Workers, tmp_path: Path
    ) -> None:
        """With two workers, each alert is found through either's web port (advertised_url)."""
        workers = own_broker_workers
        s = workers.settings
        second = s.replace(
            worker=dataclasses.replace(
                s.worker, web_port=free_port(), data_dir=tmp_path / "data-2"
            ),
            metrics=dataclasses.replace(s.metrics, worker_port=free_port()),
        )
        names = TopicNames.from_settings(s.topics)
        workers.start()
        workers.start(second)
        produce(s, example_events(*FEEDS))
        alerts = wait_for(s, names.alerts, lambda rs: len(rs) >= 3, timeout_s=180)
        deadline = time.monotonic() + 240
        for metrics_port in (s.metrics.worker_port, second.metrics.worker_port):
            # ready = partitions assigned: with two partitions, each worker owns one, so
            # one of the two answers every lookup by asking the other.
            while get(metrics_port, "/readyz")[0] != 200:
                assert time.monotonic() < deadline, "a worker never became ready"
                time.sleep(0.5)
        for port in (s.worker.web_port, second.worker.web_port):
            for alert in alerts:
                code, body = get(port, alert_path(alert.dedup_key), WEB_TOKEN)
                while code != 200 and time.monotonic() < deadline:  # a rebalance in progress
                    time.sleep(0.5)
                    code, body = get(port, alert_path(alert.dedup_key), WEB_TOKEN)
                assert code == 200, (port, code)
                assert json.loads(body)["status"] == "OPEN"


class TestPrepareTopics:
    def test_creates_the_worker_topics(self, kafka_isolated: Settings) -> None:
        """The declared topics, the control topic and the providers' alert topics are created."""
        prepare_topics(kafka_isolated, ["RX1", "bad code"])
        names = TopicNames.from_settings(kafka_isolated.topics)
        with admin_client(kafka_isolated) as admin:
            present = set(admin.list_topics())
        wanted = {
            names.events,
            names.alerts,
            names.alert_status,
            names.engine_errors,
            names.alerts_for("RX1"),
        }
        assert wanted | {control_topic_name(kafka_isolated)} <= present
        assert not any(t.endswith("bad code") for t in present)

    def test_sizes_the_archive_topics_for_the_listener_frame_limit(
        self, kafka_isolated: Settings
    ) -> None:
        """Topics the worker creates first match what `carebus topics apply` declares."""
        mllp = dataclasses.replace(kafka_isolated.mllp, max_frame_bytes=3_000_000)
        settings = kafka_isolated.replace(mllp=mllp)
        prepare_topics(settings, [])
        names = TopicNames.from_settings(settings.topics)
        reports = {r.name: r for r in apply(settings)}
        for topic in (names.raw, names.deadletter):
            assert reports[topic].status == "ok", reports[topic].drift

    def test_refuses_topics_that_are_not_co_partitioned(self, kafka_isolated: Settings) -> None:
        """An events topic with another partition count stops the worker with a clear error."""
        names = TopicNames.from_settings(kafka_isolated.topics)
        events = next(t for t in declared_topics(kafka_isolated.topics) if t.name == names.events)
        ensure(kafka_isolated, [dataclasses.replace(events, partitions=1)])
        with pytest.raises(ConfigError, match="partitions"):
            prepare_topics(kafka_isolated, [])
