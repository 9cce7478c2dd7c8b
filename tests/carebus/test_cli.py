"""Tests for the ``carebus broker`` and ``carebus topics`` commands, run as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from carebus.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def carebus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``carebus ARGS`` in a fresh interpreter with only the given CAREBUS_ settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")}
    return subprocess.run(
        [sys.executable, "-m", "carebus", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def local_broker_env(home: Path, **extra: str) -> dict[str, str]:
    port = free_port()
    return {
        "CAREBUS_BROKER_HOME": str(home),
        "CAREBUS_BROKER_PORT": str(port),
        "CAREBUS_BROKER_CONTROLLER_PORT": str(free_port()),
        **extra,
    }


def cluster_env(kafka: Settings, **extra: str) -> dict[str, str]:
    """The environment naming the test cluster (with any CAREBUS_KAFKA_* security settings)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("CAREBUS_KAFKA_")}
    env["CAREBUS_KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    # The test broker is the local development broker (carebus.durability).
    env["CAREBUS_BROKER_PORT"] = str(kafka.broker.port)
    return {**env, **extra}


class TestBrokerCommand:
    def test_status_of_a_broker_never_started_is_down(self, tmp_path: Path) -> None:
        """``broker status`` on an empty home prints 'down' and exits 3."""
        env = local_broker_env(tmp_path / "home")
        result = carebus("broker", "status", env=env)
        assert result.returncode == 3
        assert result.stdout.strip() == f"broker down at 127.0.0.1:{env['CAREBUS_BROKER_PORT']}"

    def test_stop_of_a_broker_never_started_says_so(self, tmp_path: Path) -> None:
        """``broker stop`` with nothing running says the broker is not running, exit 0."""
        result = carebus("broker", "stop", env=local_broker_env(tmp_path / "home"))
        assert result.returncode == 0
        assert result.stdout.startswith("broker not running")

    def test_missing_java_is_one_line_on_stderr(self, tmp_path: Path) -> None:
        """Without Java, ``broker start`` prints a single error line and exits 1."""
        env = local_broker_env(tmp_path / "home", CAREBUS_BROKER_JAVA=str(tmp_path / "nojava"))
        result = carebus("broker", "start", env=env)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("carebus: Java")

    def test_port_in_use_is_one_line_on_stderr(self, tmp_path: Path) -> None:
        """With the broker port taken, ``broker start`` prints one error line and exits 1."""
        with socket.create_server(("127.0.0.1", 0)) as holder:
            port = holder.getsockname()[1]
            env = local_broker_env(tmp_path / "home", CAREBUS_BROKER_PORT=str(port))
            result = carebus("broker", "start", env=env)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert f"127.0.0.1:{port}" in lines[0]

    @pytest.mark.parametrize("action", ["start", "stop"])
    def test_existing_cluster_means_no_local_broker(self, tmp_path: Path, action: str) -> None:
        """With bootstrap servers set, start and stop only say a cluster is in use."""
        env = local_broker_env(
            tmp_path / "home", CAREBUS_KAFKA_BOOTSTRAP_SERVERS="kafka.example:9092"
        )
        result = carebus("broker", action, env=env)
        assert result.returncode == 0
        assert "existing Kafka cluster at kafka.example:9092" in result.stdout
        assert not (tmp_path / "home").exists()

    def test_status_of_unreachable_cluster_is_down(self) -> None:
        """``broker status`` against a cluster that does not answer exits 3."""
        env = {
            "CAREBUS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "CAREBUS_KAFKA_REQUEST_TIMEOUT_S": "1",
        }
        result = carebus("broker", "status", env=env)
        assert result.returncode == 3
        assert result.stdout.startswith("cluster unreachable")


class TestSettingsErrors:
    def test_unknown_setting_is_a_usage_error(self) -> None:
        """A misspelt CAREBUS_ variable stops any command with exit 2 and one line."""
        result = carebus("broker", "status", env={"CAREBUS_BROKER_PROT": "1"})
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "carebus: unknown setting(s) in the environment: CAREBUS_BROKER_PROT"
        ]


@pytest.mark.integration
class TestAgainstBroker:
    def test_status_of_reachable_cluster_is_up(self, kafka: Settings) -> None:
        """``broker status`` against a running cluster reports it up and exits 0."""
        result = carebus("broker", "status", env=cluster_env(kafka))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("cluster up")

    def test_topics_apply_creates_then_reports_ok_then_drift(
        self, kafka: Settings, unique_topic_prefix: str
    ) -> None:
        """``topics apply`` prints created, then ok; changed partitions give drift and exit 1."""
        env = cluster_env(
            kafka, CAREBUS_TOPICS_PREFIX=unique_topic_prefix, CAREBUS_TOPICS_PARTITIONS="2"
        )
        first = carebus("topics", "apply", env=env)
        assert first.returncode == 0, first.stderr
        assert [line.split()[0] for line in first.stdout.splitlines()] == ["created"] * 7
        assert f"{unique_topic_prefix}.events" in first.stdout
        second = carebus("topics", "apply", env=env)
        assert second.returncode == 0, second.stderr
        assert [line.split()[0] for line in second.stdout.splitlines()] == ["ok"] * 7
        drifted = carebus("topics", "apply", env={**env, "CAREBUS_TOPICS_PARTITIONS": "3"})
        assert drifted.returncode == 1
        lines = drifted.stdout.splitlines()
        assert [line.split()[0] for line in lines] == ["drift"] * 7
        assert all("partitions is 2, declared 3" in line for line in lines)
