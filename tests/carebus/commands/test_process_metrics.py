"""Each process's /metrics shows only its own metrics (carebus.metrics roles, as wired).

The listener runs in this process (``carebus.commands.listen.serve``); the worker
runs as a real ``carebus worker`` subprocess.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from carebus.commands.listen import serve
from carebus.metrics import METRICS
from carebus.settings import Settings
from tests.connectors.ingest_helpers import create_ingest_topics
from tests.streams.integration.live import Workers, free_port, worker_settings

pytestmark = pytest.mark.integration

#: Metric families (counters without ``_total``) of each process.
LISTENER = {s.name.removesuffix("_total") for s in METRICS if "listener" in s.roles}
WORKER = {s.name.removesuffix("_total") for s in METRICS if "worker" in s.roles}


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _wait_for(url: str, timeout_s: float) -> bytes:
    """The body of ``url`` once it answers 200 (polled off the event loop's thread)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = _get(url)
        if status == 200:
            return body
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s} s")


def _carebus_families(exposition: bytes) -> set[str]:
    return {
        f.name
        for f in text_string_to_metric_families(exposition.decode())
        if f.name.startswith("carebus_")
    }


class TestProcessExpositions:
    async def test_listener_metrics_have_no_worker_metric(self, kafka_isolated: Settings) -> None:
        """A running listener's /metrics lists its ingest metrics and no worker gauge."""
        create_ingest_topics(kafka_isolated)
        port = free_port()
        settings = kafka_isolated.replace(
            mllp=dataclasses.replace(kafka_isolated.mllp, port=0),
            metrics=dataclasses.replace(kafka_isolated.metrics, listener_port=port),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, stop=stop, grace_s=1.0))
        try:
            await asyncio.to_thread(_wait_for, f"http://127.0.0.1:{port}/readyz", 60.0)
            body = await asyncio.to_thread(_wait_for, f"http://127.0.0.1:{port}/metrics", 30.0)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        assert _carebus_families(body) == LISTENER
        assert b"carebus_worker_" not in body
        assert b"carebus_mllp_open_connections 0.0" in body

    def test_worker_metrics_have_no_listener_metric(
        self, kafka: Settings, unique_topic_prefix: str, tmp_path: Path
    ) -> None:
        """A running worker's /metrics lists its own metrics and no MLLP series."""
        workers = Workers(worker_settings(kafka, unique_topic_prefix, tmp_path / "data"), tmp_path)
        workers.prepare_topics()
        try:
            workers.start()
            port = workers.settings.metrics.worker_port
            body = _wait_for(f"http://127.0.0.1:{port}/metrics", 90.0)
        finally:
            workers.close()
        assert _carebus_families(body) == WORKER
        assert b"carebus_mllp_" not in body
        assert b"carebus_worker_deadlines_pending" in body
