"""``/metrics``, ``/healthz`` and ``/readyz`` over HTTP for every carebus process.

A process builds one :class:`HealthServer` with its :class:`carebus.metrics.Metrics`
and the readiness checks that matter to it, and runs it beside its own work::

    checks = {
        "kafka": kafka_check(settings, [names.raw, names.events]),   # reachable, topics present
        "partitions": assignment_check(lambda: len(consumer.assignment())),
    }
    server = HealthServer(metrics, checks, host=settings.metrics.host,
                          port=settings.metrics.worker_port)
    await server.start()
    ...
    await server.stop()

``/healthz`` answers 200 while the event loop runs (alive). ``/readyz`` runs every
check concurrently, each bounded by ``check_timeout_s``, and answers 200 when all
pass, else 503; its JSON body names each check with ``ok`` and a ``detail`` that
never holds patient data. A check is any ``async () -> CheckResult``; an exception
or a timeout counts as not ready. ``/metrics`` is the Prometheus text exposition.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from carebus.log import get_logger
from carebus.metrics import CONTENT_TYPE, Metrics
from carebus.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one readiness check."""

    ok: bool
    detail: str = ""


Check = Callable[[], Awaitable[CheckResult]]


async def run_checks(
    checks: Mapping[str, Check], *, timeout_s: float = 5.0
) -> dict[str, CheckResult]:
    """Run every check concurrently; a failure or timeout is a not-ready result."""

    async def one(check: Check) -> CheckResult:
        try:
            return await asyncio.wait_for(check(), timeout_s)
        except TimeoutError:
            return CheckResult(False, f"no answer within {timeout_s:g} s")
        except Exception as exc:  # a broken check means not ready, never a crash
            return CheckResult(False, type(exc).__name__)

    names = list(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    return dict(zip(names, results, strict=True))


def add_health_routes(
    app: web.Application,
    metrics: Metrics | None,
    checks: Mapping[str, Check],
    *,
    check_timeout_s: float = 5.0,
) -> None:
    """Add ``/metrics`` (when ``metrics`` is given), ``/healthz`` and ``/readyz`` to ``app``."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_request: web.Request) -> web.Response:
        results = await run_checks(checks, timeout_s=check_timeout_s)
        ready = all(r.ok for r in results.values())
        body = {
            "ready": ready,
            "checks": {n: {"ok": r.ok, "detail": r.detail} for n, r in results.items()},
        }
        if not ready:
            failing = sorted(n for n, r in results.items() if not r.ok)
            log.info("readyz.not_ready", failing=",".join(failing))
        return web.json_response(body, status=200 if ready else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if metrics is not None:

        async def metrics_view(_request: web.Request) -> web.Response:
            response = web.Response(body=metrics.render())
            response.headers["Content-Type"] = CONTENT_TYPE
            return response

        app.router.add_get("/metrics", metrics_view)


class HealthServer:
    """A small aiohttp server for ``/metrics``, ``/healthz`` and ``/readyz``.

    ``port=0`` binds a free port; :attr:`port` tells which once started. With
    ``ssl_context`` (:func:`metrics_ssl_context`) it serves HTTPS only.
    """

    def __init__(
        self,
        metrics: Metrics | None,
        checks: Mapping[str, Check],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        check_timeout_s: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self.app = web.Application()
        add_health_routes(self.app, metrics, checks, check_timeout_s=check_timeout_s)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve in the background of the running event loop."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        log.info("health.started", host=self.host, port=self.port, tls=self._ssl is not None)

    async def stop(self) -> None:
        """Stop serving and release the port."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def metrics_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS for the health, metrics and dashboard servers (``metrics.tls_certfile``)."""
    from carebus.webauth import server_ssl_context

    m = settings.metrics
    return server_ssl_context(m.tls_certfile, m.tls_keyfile, section="metrics.tls")


# ------------------------------------------------------------ stock checks


def assignment_check(assigned: Callable[[], Any]) -> Check:
    """Ready when ``assigned()`` (e.g. the consumer's partition count) is truthy."""

    async def check() -> CheckResult:
        value = assigned()
        if isinstance(value, int) and not isinstance(value, bool):
            return CheckResult(value > 0, f"{value} partitions assigned")
        return CheckResult(bool(value), "partitions assigned" if value else "no partitions")

    return check


class _KafkaProbe:
    """Kafka reachable and topics present, asked through one reused admin client.

    At most one probe runs at a time (in a worker thread); callers that arrive
    while it runs wait for the same answer, so a hanging cluster never piles up
    threads. Answers are reused for ``ttl_s``.
    """

    def __init__(self, settings: Settings, topics: Sequence[str], ttl_s: float) -> None:
        self._settings = settings
        self._topics = tuple(topics)
        self._ttl_s = ttl_s
        self._admin: Any = None
        self._inflight: asyncio.Future[CheckResult] | None = None
        self._cached: tuple[float, CheckResult] | None = None

    def _config(self) -> dict[str, Any]:
        from kafka import KafkaAdminClient

        from carebus.kafka import kafka_python_config

        cfg = kafka_python_config(self._settings)
        if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:
            # Give up on an unreachable cluster as fast as on a slow request.
            cfg["bootstrap_timeout_ms"] = cfg["request_timeout_ms"]
        return cfg

    def _probe(self) -> CheckResult:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(**self._config())
            present = set(self._admin.list_topics())
        except KafkaError as exc:
            self._close()
            return CheckResult(False, f"Kafka unreachable: {type(exc).__name__}")
        missing = [t for t in self._topics if t not in present]
        if missing:
            return CheckResult(False, f"missing topics: {', '.join(missing)}")
        return CheckResult(True, f"{len(self._topics)} topics present")

    def _close(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            finally:
                self._admin = None

    def _done(self, fut: asyncio.Future[CheckResult]) -> None:
        self._inflight = None
        if not fut.cancelled() and fut.exception() is None:
            self._cached = (time.monotonic(), fut.result())

    async def __call__(self) -> CheckResult:
        if self._cached is not None and time.monotonic() - self._cached[0] < self._ttl_s:
            return self._cached[1]
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self._probe))
            self._inflight.add_done_callback(self._done)
        return await asyncio.shield(self._inflight)

    async def close(self) -> None:
        """Wait for a running probe, then close the admin client."""
        if self._inflight is not None:
            with contextlib.suppress(Exception):
                await self._inflight
        await asyncio.to_thread(self._close)


def kafka_check(settings: Settings, topics: Sequence[str], *, ttl_s: float = 2.0) -> Check:
    """Ready when Kafka answers and every topic in ``topics`` exists.

    Answers are cached for ``ttl_s`` so frequent probes do not load the cluster.
    The returned check has an async ``close()`` to release its admin client.
    """
    return _KafkaProbe(settings, topics, ttl_s)
