"""Tests for carebus.broker: the project's own local Kafka broker."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carebus import broker
from carebus.errors import BrokerError, KafkaUnavailable
from carebus.settings import BrokerSettings


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on right now (the OS picks them)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def throwaway_settings(home: Path, **overrides: Any) -> BrokerSettings:
    """Broker settings for a home of its own on free ports."""
    port, cport = free_ports(2)
    s = BrokerSettings(home=home, port=port, controller_port=cport)
    return dataclasses.replace(s, **overrides)


def dead_pid() -> int:
    """The pid of a process that has already exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class TestServerProperties:
    def test_single_node_combined_roles_on_configured_ports(self, tmp_path: Path) -> None:
        """The properties run broker and controller in one node on the configured ports."""
        s = BrokerSettings(host="127.0.0.1", port=39001, controller_port=39002)
        props = dict(
            line.split("=", 1) for line in broker.server_properties(s, tmp_path).splitlines()
        )
        assert props["process.roles"] == "broker,controller"
        assert props["listeners"] == "PLAINTEXT://127.0.0.1:39001,CONTROLLER://127.0.0.1:39002"
        assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:39001"
        assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:39002"
        assert props["log.dirs"] == str(tmp_path)
        assert props["offsets.topic.replication.factor"] == "1"

    def test_topics_are_never_created_implicitly(self, tmp_path: Path) -> None:
        """Auto-creation is off, so every topic comes from the declarations."""
        text = broker.server_properties(BrokerSettings(), tmp_path)
        assert "auto.create.topics.enable=false" in text.splitlines()

    def test_request_threads_follow_the_settings(self, tmp_path: Path) -> None:
        """The broker's network and I/O thread counts are the configured ones."""
        s = BrokerSettings(network_threads=2, io_threads=5)
        lines = broker.server_properties(s, tmp_path).splitlines()
        assert "num.network.threads=2" in lines
        assert "num.io.threads=5" in lines


class TestClusterId:
    def test_cluster_ids_are_22_char_url_safe_and_distinct(self) -> None:
        """Cluster ids look like Kafka's random-uuid output and do not repeat."""
        ids = {broker.new_cluster_id() for _ in range(200)}
        assert len(ids) == 200
        for cid in ids:
            assert len(cid) == 22
            assert not cid.startswith("-")
            assert set(cid) <= set(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            )


class TestJarDir:
    def test_keyed_by_kafka_and_log4j_version(self, tmp_path: Path) -> None:
        """Different Kafka versions get different classpath directories in the cache."""
        a = broker.jar_dir(BrokerSettings(cache_dir=tmp_path, kafka_version="4.0.0"))
        b = broker.jar_dir(BrokerSettings(cache_dir=tmp_path, kafka_version="4.4.0"))
        assert a != b
        assert a.parent.parent == tmp_path.resolve()


class TestStartFailures:
    def test_missing_java_is_a_one_line_error(self, tmp_path: Path) -> None:
        """Without Java, start raises a one-line BrokerError naming the setting to fix."""
        s = throwaway_settings(tmp_path / "home", java=str(tmp_path / "no-such-java"))
        with pytest.raises(BrokerError) as info:
            broker.start(s)
        message = str(info.value)
        assert "Java" in message
        assert "CAREBUS_BROKER_JAVA" in message
        assert "\n" not in message

    def test_missing_maven_without_cached_jars_is_a_one_line_error(self, tmp_path: Path) -> None:
        """With no cached jars and no Maven, start says Maven is needed, in one line."""
        s = throwaway_settings(
            tmp_path / "home", cache_dir=tmp_path / "cache", maven=str(tmp_path / "no-mvn")
        )
        with pytest.raises(BrokerError) as info:
            broker.start(s)
        message = str(info.value)
        assert "Maven" in message
        assert "CAREBUS_BROKER_MAVEN" in message
        assert "\n" not in message

    def test_port_in_use_is_a_one_line_error(self, tmp_path: Path) -> None:
        """A port held by another process gives a one-line error naming the port."""
        with socket.create_server(("127.0.0.1", 0)) as holder:
            port = holder.getsockname()[1]
            s = throwaway_settings(tmp_path / "home", port=port)
            with pytest.raises(BrokerError) as info:
                broker.start(s)
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message
        assert "CAREBUS_BROKER_PORT" in message
        assert "\n" not in message
        assert not (tmp_path / "home" / "broker.pid").exists()


class TestStatusWithoutBroker:
    def test_fresh_home_is_down(self, tmp_path: Path) -> None:
        """A home where nothing was started reports the broker down, without a pid."""
        state = broker.status(throwaway_settings(tmp_path / "home"))
        assert state.running is False
        assert state.pid is None

    def test_stale_pid_file_is_removed(self, tmp_path: Path) -> None:
        """A PID file whose process is gone is reported as stale and removed."""
        s = throwaway_settings(tmp_path / "home")
        pid_file = broker.BrokerPaths.of(s).pid_file
        pid_file.parent.mkdir(parents=True)
        pid_file.write_text(f"{dead_pid()}\n")
        state = broker.status(s)
        assert state.running is False
        assert "stale" in state.note
        assert not pid_file.exists()

    def test_pid_of_an_unrelated_process_is_not_taken_for_the_broker(self, tmp_path: Path) -> None:
        """A recycled pid (a live process that is not this home's broker) counts as stale."""
        s = throwaway_settings(tmp_path / "home")
        pid_file = broker.BrokerPaths.of(s).pid_file
        pid_file.parent.mkdir(parents=True)
        pid_file.write_text(f"{os.getpid()}\n")
        assert broker.status(s).running is False
        assert not pid_file.exists()

    def test_stop_without_broker_returns_none(self, tmp_path: Path) -> None:
        """Stopping a broker that is not running does nothing and returns None."""
        assert broker.stop(throwaway_settings(tmp_path / "home")) is None


class TestRoundTripWithoutBroker:
    def test_unreachable_address_raises_kafka_unavailable(self) -> None:
        """A round trip to an address where nothing listens raises KafkaUnavailable."""
        (port,) = free_ports(1)
        with pytest.raises(KafkaUnavailable):
            broker.round_trip(f"127.0.0.1:{port}", timeout_s=1.0)


@pytest.fixture(scope="module")
def throwaway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerSettings]:
    """A second broker home on free ports, so the shared test broker is never disturbed."""
    s = throwaway_settings(tmp_path_factory.mktemp("broker") / "home")
    try:
        yield s
    finally:
        broker.stop(s)


def wait_down(s: BrokerSettings, timeout_s: float = 30.0) -> broker.BrokerStatus:
    """Status once the broker process has gone (a killed JVM takes a moment to exit)."""
    deadline = time.monotonic() + timeout_s
    state = broker.status(s)
    while state.pid is not None and time.monotonic() < deadline:
        time.sleep(0.1)
        state = broker.status(s)
    return state


@pytest.mark.integration
class TestLifecycle:
    def test_start_serves_a_round_trip(self, throwaway: BrokerSettings) -> None:
        """After start returns, a record produced to the broker can be read back."""
        result = broker.start(throwaway)
        assert result.address == broker.address(throwaway)
        broker.round_trip(result.address, timeout_s=60)

    def test_second_start_is_a_no_op(self, throwaway: BrokerSettings) -> None:
        """Starting a running broker keeps the same process and reports started=False."""
        first = broker.start(throwaway)
        second = broker.start(throwaway)
        assert second.started is False
        assert second.pid == first.pid

    def test_status_reports_running_broker(self, throwaway: BrokerSettings) -> None:
        """Status reports a running broker as up, with its pid and address."""
        result = broker.start(throwaway)
        state = broker.status(throwaway)
        assert state.running is True
        assert state.pid == result.pid
        assert state.address == f"127.0.0.1:{throwaway.port}"

    def test_status_after_kill_is_down_and_start_recovers(self, throwaway: BrokerSettings) -> None:
        """After kill -9, status says down and removes the PID file; start then starts anew."""
        old = broker.start(throwaway)
        os.kill(old.pid, signal.SIGKILL)
        state = wait_down(throwaway)
        assert state.running is False
        assert not broker.BrokerPaths.of(throwaway).pid_file.exists()
        new = broker.start(throwaway)
        assert new.started is True
        assert new.pid != old.pid
        broker.round_trip(new.address, timeout_s=60)

    def test_stop_stops_the_broker(self, throwaway: BrokerSettings) -> None:
        """Stop ends the process, removes the PID file and frees the port."""
        result = broker.start(throwaway)
        assert broker.stop(throwaway) == result.pid
        assert broker.status(throwaway).running is False
        assert not broker.BrokerPaths.of(throwaway).pid_file.exists()
        with socket.create_server(("127.0.0.1", throwaway.port)):
            pass
        assert broker.stop(throwaway) is None
