"""Tests for the metrics and health wiring of carebus/commands/listen.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hl7.client
import pytest
from kafka.admin import NewTopic
from prometheus_client.parser import text_string_to_metric_families

from carebus.admin import admin_client
from carebus.commands.listen import build_metrics, listening_check, start_when_kafka_ready
from carebus.errors import ConfigError
from carebus.health import CheckResult
from carebus.metrics import OTHER, Metrics
from carebus.settings import Settings
from carebus.topics import TopicNames, apply, declared_topics
from connectors.ingest import Ingest
from tests.connectors.ingest_helpers import adt

REGION = "providers:\n  RXA01: {name: Test Hospital, kind: hospital}\n  G0001: {kind: gp}\n"
#: The raw topic refuses records over this size, so that Kafka itself rejects one.
RAW_MAX_MESSAGE_BYTES = 65_536
NHS_ACCEPTED = "9434765919"
NHS_OVERSIZE = "9434765870"
GARBAGE = b"NOT HL7 AT ALL: SMITHSON 9449305552 19630413"
#: What the messages sent here say about their (fictional) patients, and their ids.
PATIENT_DATA = (
    NHS_ACCEPTED,
    NHS_OVERSIZE,
    "9449305552",
    "SMITHSON",
    "19630413",
    "PATIENT",
    "19700101",
    "M123",
    "METRICS1",
    "METRICS3",
)


def _with_region(settings: Settings, path: Path) -> Settings:
    return settings.replace(worker=dataclasses.replace(settings.worker, region_config=path))


class TestBuildMetrics:
    def test_provider_labels_come_from_the_region_config(self, tmp_path: Path) -> None:
        """Providers named in the region config are labels; any other sender is `other`."""
        region = tmp_path / "region.yaml"
        region.write_text(REGION, encoding="utf-8")
        metrics = build_metrics(_with_region(Settings(), region))
        assert metrics.provider_label("RXA01") == "RXA01"
        assert metrics.provider_label("G0001") == "G0001"
        assert metrics.provider_label("RX1") == OTHER

    def test_without_a_region_file_every_sender_is_other(self, tmp_path: Path) -> None:
        """With no region config file, no sending facility becomes a label value."""
        metrics = build_metrics(_with_region(Settings(), tmp_path / "absent.yaml"))
        assert metrics.provider_label("RXA01") == OTHER

    def test_a_broken_region_config_stops_the_start(self, tmp_path: Path) -> None:
        """A region config the worker would refuse is a ConfigError for the listener too."""
        region = tmp_path / "region.yaml"
        region.write_text("providers: {RXA01: {kind: castle}}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="kind"):
            build_metrics(_with_region(Settings(), region))

    def test_topic_labels_follow_the_configured_prefix(self) -> None:
        """Produce errors are labelled with the topics of this deployment's prefix."""
        settings = Settings()
        settings = settings.replace(topics=dataclasses.replace(settings.topics, prefix="zone9"))
        metrics = build_metrics(settings)
        assert metrics.topic_label("zone9.hl7.raw") == "zone9.hl7.raw"
        assert metrics.topic_label("carebus.hl7.raw") == OTHER


class TestListenerReasonLabels:
    def test_listener_reason_codes_are_kept_as_labels(self) -> None:
        """The reason codes the listener uses besides MessageRejected's fold to themselves."""
        metrics = Metrics()
        for reason in (
            "framing-error",
            "translation-failed",
            "kafka-unavailable",
            "internal-error",
            "sender-not-allowed",
            "duplicate",
            "message-too-large",
        ):
            assert metrics.reason_label(reason) == reason


class TestListeningCheck:
    async def test_ready_only_while_the_mllp_socket_listens(self) -> None:
        """The MLLP check passes while the socket accepts connections, not before or after."""
        settings = Settings()
        settings = settings.replace(mllp=dataclasses.replace(settings.mllp, port=0))
        ingest = Ingest(settings)
        check = listening_check(ingest)
        assert not (await check()).ok
        await ingest.mllp.start()
        try:
            result = await check()
            assert result.ok
            assert str(ingest.mllp.port) in result.detail
        finally:
            await ingest.mllp.stop(1.0)
        assert not (await check()).ok


class TestStartWhenKafkaReady:
    async def test_waits_while_not_ready_and_gives_up_on_stop(self) -> None:
        """While the Kafka check fails the MLLP socket stays closed; a stop ends the wait."""
        settings = Settings()
        settings = settings.replace(mllp=dataclasses.replace(settings.mllp, port=0))
        ingest = Ingest(settings)
        stop = asyncio.Event()
        asked = 0

        async def not_ready() -> CheckResult:
            nonlocal asked
            asked += 1
            if asked == 2:
                stop.set()
            return CheckResult(False, "missing topics: x")

        started = await asyncio.wait_for(start_when_kafka_ready(ingest, stop, not_ready), 10)
        assert started is False
        assert asked == 2
        assert not ingest.listening

    async def test_a_refused_durability_check_keeps_mllp_closed(self) -> None:
        """When the check before start refuses, the error propagates and MLLP never opens."""
        from carebus.errors import ConfigError

        settings = Settings()
        settings = settings.replace(mllp=dataclasses.replace(settings.mllp, port=0))
        ingest = Ingest(settings)

        async def ready() -> CheckResult:
            return CheckResult(True, "ok")

        async def refuse() -> None:
            raise ConfigError("listener refuses to start: not durable")

        with pytest.raises(ConfigError, match="refuses to start"):
            await start_when_kafka_ready(ingest, asyncio.Event(), ready, before_start=refuse)
        assert not ingest.listening

    async def test_kafka_unavailable_during_the_check_is_retried(self) -> None:
        """A durability check that cannot reach Kafka is retried like the Kafka check."""
        from carebus.errors import KafkaUnavailable

        settings = Settings()
        settings = settings.replace(mllp=dataclasses.replace(settings.mllp, port=0))
        ingest = Ingest(settings)
        stop = asyncio.Event()
        tries = 0

        async def ready() -> CheckResult:
            return CheckResult(True, "ok")

        async def flaky() -> None:
            nonlocal tries
            tries += 1
            if tries == 2:
                stop.set()
            raise KafkaUnavailable("cannot describe topics")

        started = await asyncio.wait_for(
            start_when_kafka_ready(ingest, stop, ready, before_start=flaky), 10
        )
        assert (started, tries) == (False, 2)
        assert not ingest.listening


# ------------------------------------------------------------------ integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Listener:
    """A running `carebus listen` subprocess and where to reach it."""

    proc: subprocess.Popen[bytes]
    mllp_port: int
    metrics_port: int
    log: Path
    topics: TopicNames

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def scrape(self) -> str:
        status, body = _get(self.url("/metrics"))
        assert status == 200
        return body.decode("utf-8")

    def wait_for(self, path: str, status: int, timeout_s: float = 30.0) -> bytes:
        deadline = time.monotonic() + timeout_s
        last: tuple[int, bytes] | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"carebus listen exited early with {self.proc.returncode}")
            try:
                last = _get(self.url(path))
            except OSError:
                last = None
            if last is not None and last[0] == status:
                return last[1]
            time.sleep(0.2)
        raise AssertionError(f"{path} did not answer {status} in time (last: {last!r})")


def _start_listener(settings: Settings, topics: TopicNames, region: Path, log: Path) -> Listener:
    mllp_port, metrics_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")}
    env |= {k: v for k, v in os.environ.items() if k.startswith("CAREBUS_KAFKA_")}
    env |= {
        "CAREBUS_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        # the test broker is the local development broker (carebus.durability)
        "CAREBUS_BROKER_PORT": str(settings.broker.port),
        "CAREBUS_TOPICS_PREFIX": topics.prefix,
        "CAREBUS_MLLP_PORT": str(mllp_port),
        "CAREBUS_METRICS_HOST": "127.0.0.1",
        "CAREBUS_METRICS_LISTENER_PORT": str(metrics_port),
        "CAREBUS_WORKER_REGION_CONFIG": str(region),
        "CAREBUS_LOG_FORMAT": "json",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "carebus", "listen"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Listener(proc, mllp_port, metrics_port, log, topics)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def _create_topics(settings: Settings) -> TopicNames:
    """The events and dead-letter topics as declared, and a raw topic with a small record limit."""
    names = TopicNames.from_settings(settings.topics)
    apply(
        settings,
        [s for s in declared_topics(settings.topics) if s.name in (names.events, names.deadletter)],
    )
    with admin_client(settings) as admin:
        admin.create_topics(
            [
                NewTopic(
                    names.raw,
                    settings.topics.partitions,
                    1,
                    topic_configs={"max.message.bytes": str(RAW_MAX_MESSAGE_BYTES)},
                )
            ]
        )
    return names


@dataclass
class Traffic:
    """What the listener answered and exposed after the test messages."""

    topics: TopicNames
    log: Path
    acks: dict[str, bytes]
    while_connected: str
    after: str
    healthz: tuple[int, bytes]
    readyz: tuple[int, bytes]


@pytest.fixture(scope="class")
def traffic(kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    """Run `carebus listen`; send a message, its resend, garbage and one Kafka refuses."""
    topics = dataclasses.replace(kafka.topics, prefix=f"test-{uuid.uuid4().hex[:12]}", partitions=2)
    settings = kafka.replace(topics=topics)
    names = _create_topics(settings)
    home = tmp_path_factory.mktemp("listen-metrics")
    region = home / "region.yaml"
    region.write_text(REGION, encoding="utf-8")
    listener = _start_listener(settings, names, region, home / "listen.log")
    try:
        listener.wait_for("/readyz", 200)
        healthz = _get(listener.url("/healthz"))
        readyz = _get(listener.url("/readyz"))
        oversize = (
            adt("METRICS3", nhs_number=NHS_OVERSIZE)
            + b"NTE|1||"
            + b"X" * (2 * RAW_MAX_MESSAGE_BYTES)
            + b"\r"
        )
        acks: dict[str, bytes] = {}
        with hl7.client.MLLPClient("127.0.0.1", listener.mllp_port) as client:
            acks["accepted"] = client.send_message(adt("METRICS1", nhs_number=NHS_ACCEPTED))
            acks["duplicate"] = client.send_message(adt("METRICS1", nhs_number=NHS_ACCEPTED))
            acks["garbage"] = client.send_message(GARBAGE)
            acks["refused"] = client.send_message(oversize)
            while_connected = listener.scrape()
        deadline = time.monotonic() + 60  # a generous bound: the loop ends once closed
        after = listener.scrape()
        while "carebus_mllp_open_connections 0.0" not in after and time.monotonic() < deadline:
            time.sleep(0.1)
            after = listener.scrape()
        yield Traffic(names, listener.log, acks, while_connected, after, healthz, readyz)
    finally:
        _stop(listener.proc)


@pytest.mark.integration
class TestListenerMetrics:
    def test_healthz_and_readyz_are_200_once_listening(self, traffic: Traffic) -> None:
        """With Kafka up, its topics present and the MLLP socket open, both probes answer 200."""
        assert traffic.healthz == (200, b'{"status": "alive"}')
        status, body = traffic.readyz
        assert status == 200
        checks = json.loads(body)["checks"]
        assert checks["kafka"]["ok"] and checks["mllp"]["ok"]

    def test_the_acks_are_what_the_counters_count(self, traffic: Traffic) -> None:
        """The messages got AA, AA (resend), AR and AR, which the counters below rely on."""
        assert b"MSA|AA|METRICS1" in traffic.acks["accepted"]
        assert b"MSA|AA|METRICS1" in traffic.acks["duplicate"]
        assert b"MSA|AR|" in traffic.acks["garbage"]
        assert b"MSA|AR|METRICS3|message-too-large" in traffic.acks["refused"]

    def test_messages_are_counted_per_provider_and_type(self, traffic: Traffic) -> None:
        """Received, accepted, duplicated and rejected move, labelled by provider and type."""
        s = _samples(traffic.after)
        ours = {"provider": "RXA01", "message_type": "ADT"}
        unknown = {"provider": OTHER, "message_type": OTHER}
        assert _value(s, "carebus_mllp_messages_received_total", **ours) == 3
        assert _value(s, "carebus_mllp_messages_accepted_total", **ours) == 1
        assert _value(s, "carebus_mllp_messages_duplicated_total", **ours) == 1
        assert _value(s, "carebus_mllp_messages_rejected_total", **ours) == 1
        assert _value(s, "carebus_mllp_messages_received_total", **unknown) == 1
        assert _value(s, "carebus_mllp_messages_rejected_total", **unknown) == 1
        assert (
            _value(s, "carebus_mllp_last_message_received_timestamp_seconds", provider="RXA01") > 0
        )

    def test_ack_latency_is_observed_per_ack_code(self, traffic: Traffic) -> None:
        """Every ACK written lands in the latency histogram under its MSA-1 code."""
        s = _samples(traffic.after)
        counts = {
            code: _value(s, "carebus_mllp_ack_latency_seconds_count", ack_code=code)
            for code in ("AA", "AR", "AE")
        }
        assert counts == {"AA": 2, "AR": 2, "AE": 0}
        assert _value(s, "carebus_mllp_ack_latency_seconds_bucket", ack_code="AA", le="+Inf") == 2
        assert _value(s, "carebus_mllp_ack_latency_seconds_sum", ack_code="AA") > 0

    def test_connections_are_gauged_while_open_and_counted(self, traffic: Traffic) -> None:
        """The open-connections gauge is 1 while the sender is connected and 0 after it left."""
        during, after = _samples(traffic.while_connected), _samples(traffic.after)
        assert _value(during, "carebus_mllp_open_connections") == 1
        assert _value(after, "carebus_mllp_open_connections") == 0
        assert _value(after, "carebus_mllp_connections_total") == 1

    def test_dead_letters_are_counted_by_reason(self, traffic: Traffic) -> None:
        """Garbage is dead-lettered as `unparseable`, the oversize one as `message-too-large`."""
        s = _samples(traffic.after)
        assert _value(s, "carebus_deadletters_total", provider=OTHER, reason="unparseable") == 1
        too_large = {"provider": "RXA01", "reason": "message-too-large"}
        assert _value(s, "carebus_deadletters_total", **too_large) == 1
        total = sum(v for (n, _), v in s.items() if n == "carebus_deadletters_total")
        assert total == 2

    def test_a_record_kafka_refuses_is_a_produce_error_on_its_topic(self, traffic: Traffic) -> None:
        """A raw record over the topic's size limit counts one produce error for the raw topic."""
        s = _samples(traffic.after)
        raw = traffic.topics.raw
        assert _value(s, "carebus_kafka_produce_errors_total", topic=raw) == 1
        total = sum(v for (n, _), v in s.items() if n == "carebus_kafka_produce_errors_total")
        assert total == 1

    def test_no_patient_data_in_the_metrics(self, traffic: Traffic) -> None:
        """No identifier, name or date from the messages sent appears in /metrics."""
        for text in (traffic.while_connected, traffic.after):
            for item in PATIENT_DATA:
                assert item not in text

    def test_no_patient_data_in_the_log(self, traffic: Traffic) -> None:
        """The listener's log names control ids and reasons, never the patients."""
        text = traffic.log.read_text(encoding="utf-8", errors="replace")
        assert "message rejected" in text
        for item in PATIENT_DATA[:-2]:
            assert item not in text


@pytest.mark.integration
class TestListenerReadiness:
    def test_readyz_is_503_while_topics_are_missing(self, kafka: Settings, tmp_path: Path) -> None:
        """Without its topics the listener is alive, not ready, MLLP closed; SIGTERM stops it."""
        names = TopicNames(f"test-{uuid.uuid4().hex[:12]}")
        region = tmp_path / "region.yaml"
        region.write_text(REGION, encoding="utf-8")
        listener = _start_listener(kafka, names, region, tmp_path / "listen.log")
        try:
            assert listener.wait_for("/healthz", 200) == b'{"status": "alive"}'
            body = json.loads(listener.wait_for("/readyz", 503))
            assert body["ready"] is False
            assert body["checks"]["kafka"]["ok"] is False
            assert body["checks"]["kafka"]["detail"].startswith("missing topics:")
            assert names.raw in body["checks"]["kafka"]["detail"]
            assert body["checks"]["mllp"] == {"ok": False, "detail": "not listening"}
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", listener.mllp_port), timeout=2).close()
            listener.proc.send_signal(signal.SIGTERM)
            assert listener.proc.wait(20) == 0
        finally:
            _stop(listener.proc)
        assert "kafka not ready" in listener.log.read_text(encoding="utf-8")
