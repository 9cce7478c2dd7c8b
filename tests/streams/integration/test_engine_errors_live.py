"""A rule that raises on one event, in a real worker on a real broker: nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

import schemas.codec
from carebus.kafka import kafka_python_config
from carebus.settings import Settings
from carebus.topics import TopicNames
from streams.engine_errors import REPLAYED_HEADER, error_headers
from tests.streams.integration.live import (
    REPO_ROOT,
    Workers,
    example_events,
    produce,
    settings_env,
    wait_for,
    worker_settings,
)

pytestmark = pytest.mark.integration

PATIENT = "9434798485"
#: The first event of E4 (an A04 registration): the faulty rule raises on it.
POISON = "MSG000085"


@pytest.fixture
def workers(kafka: Settings, unique_topic_prefix: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(worker_settings(kafka, unique_topic_prefix, tmp_path / "data"), tmp_path)
    w.prepare_topics()
    try:
        yield w
    finally:
        w.close()


def start_faulty(workers: Workers, poison: str = POISON) -> subprocess.Popen[bytes]:
    """A worker process whose extra rule raises on the message with control id ``poison``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")}
    env.update(settings_env(workers.settings))
    env["CAREBUS_LOG_FORMAT"] = "json"
    env["POISON_CONTROL_ID"] = poison
    log = (workers.log_dir / f"worker-{len(workers.procs)}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.streams.integration.faulty_worker"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    workers.procs.append(proc)
    return proc


def read_raw(settings: Settings, topic: str) -> list[tuple[int, int, bytes | None, bytes, list]]:
    """(partition, offset, key, value, headers) of every record of ``topic`` now."""
    consumer = KafkaConsumer(**kafka_python_config(settings), group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic}"
            for records in consumer.poll(timeout_ms=500).values():
                out += [(r.partition, r.offset, r.key, r.value, list(r.headers)) for r in records]
        return out
    finally:
        consumer.close()


def read_some(settings: Settings, topic: str, timeout_s: float = 30) -> list:
    """:func:`read_raw` until ``topic`` has a record (handed to Kafka, not yet flushed)."""
    deadline = time.monotonic() + timeout_s
    records = read_raw(settings, topic)
    while not records and time.monotonic() < deadline:
        time.sleep(0.2)
        records = read_raw(settings, topic)
    return records


def metric(port: int, name: str) -> dict[str, float]:
    """Samples of ``name`` on the worker's /metrics, by their label text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line.rpartition(" ")
            out[labels[len(name) :]] = float(value)
    return out


class TestEngineErrorsLive:
    def test_failed_event_is_kept_counted_alerted_and_the_partition_goes_on(
        self, workers: Workers
    ) -> None:
        """The poisoned event is on engine-errors as consumed; later events still raise alerts."""
        s = workers.settings
        names = TopicNames.from_settings(s.topics)
        events = example_events("E4-death-pending-appointment")
        poisoned = [
            (k, v)
            for k, v in events
            if schemas.codec.decode(v)[1]["header"]["control_id"] == POISON
        ]
        assert len(poisoned) == 1
        start_faulty(workers)
        topic = names.events
        producer_cfg = kafka_python_config(s)
        from kafka import KafkaProducer

        p = KafkaProducer(**producer_cfg, acks="all")
        for key, value in events:
            p.send(topic, key=key.encode(), value=value, headers=[("origin", b"test")])
        p.flush(30)
        p.close()

        # Later events of the same patient (same partition) are processed: their alerts come.
        alerts = wait_for(
            s,
            names.alerts,
            lambda rs: (
                {r.record["rule"] for r in rs} >= {"death-notified", "death-pending-appointments"}
            ),
            timeout_s=90,
        )
        assert {r.record["patient"] for r in alerts} == {PATIENT}

        [(partition, _, key, value, headers)] = read_some(s, names.engine_errors)
        assert (key, value) == (PATIENT.encode(), poisoned[0][1])
        assert headers[0] == ("origin", b"test")
        ours = error_headers(headers)
        assert ours["stage"] == "event"
        assert ours["rule"] == "poison-test"
        assert ours["error"] == "builtins.ValueError"
        assert "message" not in ours
        assert ours["topic"] == names.events
        assert int(ours["partition"]) == partition
        assert int(ours["offset"]) == 0

        ops = [json.loads(v) for _, _, _, v, _ in read_some(s, names.ops)]
        assert [(o["kind"], o["rule"], o["offset"]) for o in ops] == [
            ("engine-error", "poison-test", 0)
        ]
        assert PATIENT not in json.dumps(ops)

        counted = metric(s.metrics.worker_port, "carebus_worker_engine_errors_total")
        assert counted == {'{rule="other",stage="event"}': 1.0}
        assert PATIENT not in workers.log()

        env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")}
        env.update(settings_env(s))
        listed = subprocess.run(
            [sys.executable, "-m", "carebus", "engine-errors", "list"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        [line] = listed.stdout.splitlines()
        assert json.loads(line)["rule"] == "poison-test"
        assert PATIENT not in listed.stdout

    def test_replayed_event_is_applied_by_the_fixed_worker(self, workers: Workers) -> None:
        """A discharge a rule raised on, replayed once the rule is fixed, raises its alert."""
        s = workers.settings
        names = TopicNames.from_settings(s.topics)
        faulty = start_faulty(workers, poison="MSG000079")  # E1's A03 discharge to a hospice
        produce(s, example_events("E1-hospice-handoff-missed"))
        [(_, offset, _, _, _)] = read_some(s, names.engine_errors)
        assert workers.stop(faulty) == 0
        assert read_raw(s, names.alerts) == []  # the discharge never started its clock

        workers.start()  # the fixed worker
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")}
        env.update(settings_env(s))
        replayed = subprocess.run(
            [sys.executable, "-m", "carebus", "engine-errors", "replay", "--all"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert replayed.stdout.strip() == "replayed 1 of 1 selected"
        alerts = wait_for(s, names.alerts, lambda rs: len(rs) >= 1, timeout_s=90)
        assert [(a.record["rule"], a.record["patient"]) for a in alerts] == [
            ("hospice-handoff-missed", "9434797373")
        ]
        marks = [dict(h).get(REPLAYED_HEADER) for _, _, _, _, h in read_raw(s, names.events)]
        assert marks.count(f"{names.engine_errors}:0:{offset}".encode()) == 1
