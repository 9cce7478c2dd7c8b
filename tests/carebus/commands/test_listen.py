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
            assert reader.end_offsets(topics.events) == 2
        finally:
            reader.close()
