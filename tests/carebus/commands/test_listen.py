"""Tests for carebus/commands/listen.py: the listener as an operator runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import hl7.client
import pytest

from carebus.settings import Settings
from schemas.codec import decode
from tests.connectors.ingest_helpers import TopicReader, adt, create_ingest_topics

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"carebus listen exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"port {port} did not open")


class TestListenCommand:
    def test_serves_mllp_and_http_and_stops_cleanly_on_sigterm(
        self, kafka_isolated: Settings
    ) -> None:
        """`carebus listen --http` accepts over MLLP and HTTP, and exits 0 on SIGTERM."""
        topics = create_ingest_topics(kafka_isolated)
        mllp_port, http_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")} | {
            "CAREBUS_KAFKA_BOOTSTRAP_SERVERS": kafka_isolated.bootstrap_servers,
            # the test broker is the local development broker (carebus.durability)
            "CAREBUS_BROKER_PORT": str(kafka_isolated.broker.port),
            "CAREBUS_TOPICS_PREFIX": kafka_isolated.topics.prefix,
            "CAREBUS_MLLP_PORT": str(mllp_port),
            "CAREBUS_HTTP_PORT": str(http_port),
            "CAREBUS_METRICS_LISTENER_PORT": str(_free_port()),
            "CAREBUS_LOG_FORMAT": "json",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "carebus", "listen", "--http"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_port(mllp_port, proc)
            _wait_for_port(http_port, proc)
            with hl7.client.MLLPClient("127.0.0.1", mllp_port) as client:
                ack = client.send_message(adt("CLI1"))
            assert b"MSA|AA|CLI1" in ack
            request = urllib.request.Request(
                f"http://127.0.0.1:{http_port}/v1/messages", data=adt("CLI2"), method="POST"
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0
        assert b"ingest stopped" in output
        assert b"PATIENT" not in output  # no message content in the logs
        reader = TopicReader(kafka_isolated)
        try:
            assert reader.event_count(topics.events) == 2
        finally:
            reader.close()


def _free_ports(count: int) -> int:
    """A port p with p .. p + count - 1 all free (the listener and its children's metrics)."""
    for _ in range(50):
        base = _free_port()
        socks = []
        try:
            for offset in range(count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no run of free ports")


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    kids = [int(k) for k in handle.read().split()]
            except FileNotFoundError:
                continue
            found.update(kids)
            todo.extend(kids)
    return found


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = {p for p in pids if _running(p)}
        if not alive:
            return alive
        time.sleep(0.2)
    return {p for p in pids if _running(p)}


def _send_from(host: str, port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(host, 0)) as s:
        s.sendall(b"\x0b" + raw + b"\x1c\r")
        data = b""
        while not data.endswith(b"\x1c\r"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _metric_sum(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


class TestSeveralProcesses:
    def _env(self, settings: Settings, mllp_port: int, metrics_port: int) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")} | {
            "CAREBUS_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            # the test broker is the local development broker (carebus.durability)
            "CAREBUS_BROKER_PORT": str(settings.broker.port),
            "CAREBUS_TOPICS_PREFIX": settings.topics.prefix,
            "CAREBUS_MLLP_PORT": str(mllp_port),
            "CAREBUS_MLLP_PROCESSES": "2",
            "CAREBUS_METRICS_LISTENER_PORT": str(metrics_port),
            "CAREBUS_LOG_FORMAT": "json",
        }

    def _start(self, settings: Settings) -> tuple[subprocess.Popen[bytes], int, int]:
        mllp_port, metrics_port = _free_port(), _free_ports(3)
        env = self._env(settings, mllp_port, metrics_port)
        proc = subprocess.Popen(
            [sys.executable, "-m", "carebus", "listen"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        _wait_for_port(mllp_port, proc, timeout_s=90)
        return proc, mllp_port, metrics_port

    def test_children_serve_by_host_report_metrics_and_stop_with_the_parent(
        self, kafka_isolated: Settings
    ) -> None:
        """Two processes: AA for every host, a resend is caught, each child's metrics are
        served on its port, and SIGTERM stops the parent and its children."""
        topics = create_ingest_topics(kafka_isolated)
        proc, mllp_port, metrics_port = self._start(kafka_isolated)
        try:
            hosts = [f"127.0.0.{n}" for n in range(2, 10)]
            for n, host in enumerate(hosts):
                assert b"MSA|AA|MP" in _send_from(host, mllp_port, adt(f"MP{n}"))
            assert b"MSA|AA|MP0" in _send_from(hosts[0], mllp_port, adt("MP0"))  # resend
            children = _descendants(proc.pid)
            received = [
                _metric_sum(metrics_port + 1 + i, "carebus_mllp_messages_received_total")
                for i in (0, 1)
            ]
            duplicated = sum(
                _metric_sum(metrics_port + 1 + i, "carebus_mllp_messages_duplicated_total")
                for i in (0, 1)
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz") as ready:
                assert ready.status == 200
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0
        assert sum(received) == 9
        assert min(received) >= 1  # both children served someone
        assert duplicated == 1
        assert len(children) >= 2
        assert _wait_gone(children, 10) == set()
        assert output.count(b"ingest stopped") == 2
        reader = TopicReader(kafka_isolated)
        try:
            assert reader.end_offsets(topics.raw) == 8  # the resend was not published again
            feed = [decode(r.value)[1] for r in reader.read(topics.events) if r.is_feed]
        finally:
            reader.close()
        # Each child wrote its own feed watermarks (at the latest when stopping), as
        # host:pid:child.
        sources = {str(value["source"]) for value in feed}
        assert {source.rsplit(":", 1)[1] for source in sources} == {"0", "1"}
        assert {int(source.split(":")[-2]) for source in sources} <= children

    def test_children_stop_when_the_parent_is_killed(self, kafka_isolated: Settings) -> None:
        """A parent killed outright leaves no orphans: its children notice and exit."""
        create_ingest_topics(kafka_isolated)
        proc, _, _ = self._start(kafka_isolated)
        children = _descendants(proc.pid)
        try:
            proc.kill()
            proc.wait(10)
            assert len(children) >= 2
            assert _wait_gone(children, 30) == set()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pid in children:
                if _running(pid):
                    os.kill(pid, signal.SIGKILL)

    def test_a_child_that_cannot_start_fails_the_listener(self, kafka_isolated: Settings) -> None:
        """A child that fails at start (its metrics port taken) makes the parent exit 1,
        stopping the other child, without ever opening the MLLP port."""
        create_ingest_topics(kafka_isolated)
        mllp_port, metrics_port = _free_port(), _free_ports(3)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", metrics_port + 2))  # child 1's port
            taken.listen(1)
            proc = subprocess.Popen(
                [sys.executable, "-m", "carebus", "listen"],
                env=self._env(kafka_isolated, mllp_port, metrics_port),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            try:
                output, _ = proc.communicate(timeout=90)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert proc.returncode == 1
        assert b"listener process exited" in output
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", mllp_port), timeout=1).close()
