"""The dashboard's aiohttp application: the page, its JSON, and health routes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from aiohttp import web

from carebus.dashboard.collector import Collector, now_utc
from carebus.health import Check, CheckResult, add_health_routes
from carebus.metrics import Metrics

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Never cache: the page and its script must match the JSON they read.
_NO_STORE = {"Cache-Control": "no-store"}


def build_app(
    collector: Collector,
    *,
    metrics: Metrics | None = None,
    checks: Mapping[str, Check] | None = None,
    clock: Callable[[], datetime] = now_utc,
) -> web.Application:
    """``/`` (the page), ``/static/*``, ``/api/status`` and the health routes."""

    async def index(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers=_NO_STORE)

    async def status(_request: web.Request) -> web.Response:
        return web.json_response(collector.snapshot(clock()), headers=_NO_STORE)

    async def collector_ready() -> CheckResult:
        if collector.ready:
            return CheckResult(True, "tailing topics")
        return CheckResult(False, collector.last_error or "not connected yet")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/api/status", status)
    app.router.add_static("/static/", STATIC_DIR)
    add_health_routes(app, metrics, {"collector": collector_ready, **(checks or {})})
    return app
