"""Tests for carebus.health: /metrics, /healthz, /readyz and the stock checks."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from carebus.health import (
    Check,
    CheckResult,
    HealthServer,
    assignment_check,
    kafka_check,
    run_checks,
)
from carebus.metrics import Metrics
from carebus.settings import KafkaSettings, Settings
from tests.carebus.kafka_records import create_carebus_topics


async def ok() -> CheckResult:
    return CheckResult(True, "fine")


async def failing() -> CheckResult:
    return CheckResult(False, "topic missing")


async def slow() -> CheckResult:
    """A check that never answers (so its timeout always expires first)."""
    await asyncio.Event().wait()
    return CheckResult(True)


async def broken() -> CheckResult:
    raise RuntimeError("boom 9434765919")


async def get(server: HealthServer, path: str) -> tuple[int, str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}{path}") as resp,
    ):
        text = await resp.text()
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, resp.headers["Content-Type"], body if body is not None else text


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    servers: list[HealthServer] = []

    async def start(metrics: Metrics | None, checks: Mapping[str, Check]) -> HealthServer:
        server = HealthServer(metrics, checks, port=0, check_timeout_s=0.3)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


class TestEndpoints:
    async def test_healthz_answers_alive(self, serve: Any) -> None:
        """/healthz is 200 whatever the readiness checks say."""
        server = await serve(None, {"kafka": failing})
        status, _, body = await get(server, "/healthz")
        assert (status, body) == (200, {"status": "alive"})

    async def test_readyz_is_200_when_every_check_passes(self, serve: Any) -> None:
        """/readyz answers 200 and names each check when all pass."""
        server = await serve(None, {"kafka": ok, "partitions": ok})
        status, _, body = await get(server, "/readyz")
        assert status == 200
        assert body == {
            "ready": True,
            "checks": {
                "kafka": {"ok": True, "detail": "fine"},
                "partitions": {"ok": True, "detail": "fine"},
            },
        }

    async def test_readyz_is_503_when_any_check_fails(self, serve: Any) -> None:
        """One failing check makes /readyz 503 and says which."""
        server = await serve(None, {"kafka": ok, "partitions": failing})
        status, _, body = await get(server, "/readyz")
        assert status == 503
        assert body["ready"] is False
        assert body["checks"]["partitions"] == {"ok": False, "detail": "topic missing"}

    async def test_slow_and_raising_checks_are_not_ready(self, serve: Any) -> None:
        """A check that times out or raises is reported not ready, by exception class only."""
        server = await serve(None, {"slow": slow, "broken": broken})
        status, _, body = await get(server, "/readyz")
        assert status == 503
        assert body["checks"]["slow"]["ok"] is False
        assert "0.3" in body["checks"]["slow"]["detail"]
        assert body["checks"]["broken"] == {"ok": False, "detail": "RuntimeError"}

    async def test_metrics_serves_the_registry(self, serve: Any) -> None:
        """/metrics is the Prometheus text exposition of the process's Metrics."""
        metrics = Metrics(providers=["RX1"])
        metrics.message_received("RX1", "ADT")
        server = await serve(metrics, {})
        status, ctype, text = await get(server, "/metrics")
        assert status == 200
        assert ctype.startswith("text/plain")
        assert 'carebus_mllp_messages_received_total{message_type="ADT",provider="RX1"} 1.0' in text

    async def test_no_metrics_route_without_metrics(self, serve: Any) -> None:
        """A server built without Metrics has no /metrics route."""
        server = await serve(None, {})
        status, _, _ = await get(server, "/metrics")
        assert status == 404

    async def test_port_zero_binds_a_free_port(self, serve: Any) -> None:
        """Asking for port 0 gives a real port, reported back on the server."""
        server = await serve(None, {})
        assert server.port > 0


class TestChecks:
    async def test_run_checks_runs_concurrently(self) -> None:
        """Checks run at the same time: each one here answers only once all have started."""
        started: list[str] = []
        all_started = asyncio.Event()

        def meeting(name: str) -> Check:
            async def check() -> CheckResult:
                started.append(name)
                if len(started) == 3:
                    all_started.set()
                await all_started.wait()  # run one after another, the first never answers
                return CheckResult(True, name)

            return check

        results = await run_checks({n: meeting(n) for n in "abc"}, timeout_s=30)
        assert results == {n: CheckResult(True, n) for n in "abc"}

    async def test_a_check_that_never_answers_is_not_ready(self) -> None:
        """A check with no answer within the timeout is a not-ready result naming it."""
        results = await run_checks({"slow": slow, "good": ok}, timeout_s=0.3)
        assert results["slow"] == CheckResult(False, "no answer within 0.3 s")
        assert results["good"].ok

    async def test_assignment_check_reads_counts_and_truthiness(self) -> None:
        """Zero partitions (or an empty assignment) is not ready; some partitions are."""
        assert (await assignment_check(lambda: 0)()).ok is False
        assert (await assignment_check(lambda: 3)()) == CheckResult(True, "3 partitions assigned")
        assert (await assignment_check(set)()).ok is False
        assert (await assignment_check(lambda: {("t", 0)})()).ok is True


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
class TestKafkaCheck:
    async def test_ready_when_topics_exist(self, kafka_isolated: Settings) -> None:
        """With Kafka up and the topics created, the check passes."""
        names = await asyncio.to_thread(create_carebus_topics, kafka_isolated)
        check = kafka_check(kafka_isolated, [names.raw, names.deadletter])
        try:
            result = await check()
        finally:
            await check.close()  # type: ignore[attr-defined]
        assert result == CheckResult(True, "2 topics present")

    async def test_not_ready_when_a_topic_is_missing(self, kafka_isolated: Settings) -> None:
        """A missing topic is named in the detail."""
        names = await asyncio.to_thread(create_carebus_topics, kafka_isolated)
        check = kafka_check(kafka_isolated, [names.raw, names.events])
        try:
            result = await check()
        finally:
            await check.close()  # type: ignore[attr-defined]
        assert result == CheckResult(False, f"missing topics: {names.events}")

    async def test_not_ready_when_kafka_is_unreachable(self) -> None:
        """Nothing listening at the bootstrap address means not ready, not a crash."""
        settings = Settings(
            kafka=dataclasses.replace(
                KafkaSettings(), bootstrap_servers=f"127.0.0.1:{closed_port()}", request_timeout_s=2
            )
        )
        check = kafka_check(settings, ["carebus.hl7.raw"])
        try:
            result = await asyncio.wait_for(check(), 30)
        finally:
            await check.close()  # type: ignore[attr-defined]
        assert result.ok is False
        assert result.detail.startswith("Kafka unreachable")
