"""Every route carebus's HTTP servers register is in docs/operations.md, and nothing else.

Each real server is started on a free local port (the health server, the HTTP
ingest endpoint, the dashboard, the worker's web port) and asked for its routes;
the "Listening sockets" table of docs/operations.md must list exactly those. The
worker's web port is also asked for Faust's own pages (404) and for an alert
without the token (401). No Kafka is needed: none of these routes is called here
in a way that reaches it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from carebus.dashboard import Collector, build_app
from carebus.health import HealthServer
from carebus.metrics import Metrics
from carebus.settings import HttpSettings, Settings, TopicSettings, WorkerSettings
from carebus.topics import TopicNames
from connectors.http import PATH, HttpServer
from connectors.mllp.allowlist import Peer
from connectors.pipeline import NullObserver, Outcome
from streams.app import build_worker
from streams.region import parse_region
from tests.streams.conftest import REGION

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
TOKEN = "sockets-test-token"


def documented_routes() -> dict[str, set[str]]:
    """surface -> {"GET /path", ...} from the "Listening sockets" table."""
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("## Listening sockets", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    surface, route = header.index("surface"), header.index("route")
    out: dict[str, set[str]] = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != len(header):
            break  # the next table of the section
        out.setdefault(cells[surface], set()).add(cells[route].strip("`"))
    return out


def served_routes(app: web.Application) -> set[str]:
    """ "METHOD /path" of every route ``app`` registers (HEAD goes with GET)."""
    out = set()
    for r in app.router.routes():
        if r.method == "HEAD":
            continue
        path = r.resource.canonical if r.resource is not None else "?"
        if isinstance(r.resource, web.StaticResource):
            path = f"{path}/{{filename}}"
        out.add(f"{r.method} {path}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RecordingSink:
    """A pipeline stand-in for the HTTP server: accepts and remembers each message."""

    def __init__(self) -> None:
        self.observer = NullObserver()
        self.received: list[bytes] = []

    async def submit(
        self, raw: bytes, peer: Peer, received_time: datetime, *, origin: str = ""
    ) -> Outcome:
        self.received.append(raw)
        return Outcome("accepted", "RX1", f"C{len(self.received)}", "ADT")


@pytest.fixture
async def worker_web(tmp_path: Path) -> AsyncIterator[tuple[Any, int]]:
    """The worker's web server, started alone (no Kafka), with a token file."""
    token = tmp_path / "web-token"
    token.write_text(TOKEN + "\n")
    port = free_port()
    settings = Settings(
        topics=TopicSettings(prefix="t", partitions=2),
        worker=WorkerSettings(
            app_id="sockets-test",
            store="memory://",
            data_dir=tmp_path,
            web_port=port,
            web_token_file=token,
        ),
    )
    worker = build_worker(settings, region=parse_region(REGION))
    site = worker.app.web
    site.init_server()
    await site.start_server()
    try:
        yield site, port
    finally:
        await site.stop_server()


class TestDocumentedRoutes:
    async def test_health_server_routes_are_documented(self) -> None:
        """The listener's and the worker's health servers serve exactly their table rows."""
        metrics = Metrics(topics=TopicNames.from_settings(TopicSettings()), role="listener")
        server = HealthServer(metrics, {}, port=0)
        await server.start()
        try:
            served = served_routes(server.app)
        finally:
            await server.stop()
        docs = documented_routes()
        assert served == docs["listener health"]
        assert served == docs["worker health"]

    async def test_http_ingest_routes_are_documented(self) -> None:
        """The HTTP ingest endpoint serves exactly its table rows."""
        server = HttpServer(HttpSettings(port=0), RecordingSink())
        await server.start()
        try:
            served = served_routes(server._app)
        finally:
            await server.stop()
        assert served == documented_routes()["http ingest"] == {f"POST {PATH}"}

    async def test_dashboard_routes_are_documented(self) -> None:
        """The dashboard serves exactly its table rows."""
        collector = Collector(Settings(), since=datetime.now(UTC))
        app = build_app(collector, metrics=Metrics(role="dashboard"))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            served = served_routes(app)
        finally:
            await runner.cleanup()
        assert served == documented_routes()["dashboard"]

    async def test_worker_web_routes_are_documented(self, worker_web: tuple[Any, int]) -> None:
        """The worker's web port serves the alert lookup and nothing else."""
        site, _ = worker_web
        served = served_routes(site.web_app)
        assert served == documented_routes()["worker web"] == {"GET /alerts/{dedup_key}/"}


class TestWorkerWebPort:
    async def test_faust_pages_are_not_served(self, worker_web: tuple[Any, int]) -> None:
        """Faust's table, router, graph, statistics, metrics and index pages answer 404."""
        _, port = worker_web
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as client:
            for path in (
                "/table/patients/9434797373/",
                "/table/",
                "/router/",
                "/router/patients/9434797373/",
                "/graph/",
                "/stats/",
                "/assignment/",
                "/performance/",
                "/",
            ):
                async with client.get(f"http://127.0.0.1:{port}{path}", headers=headers) as r:
                    assert r.status == 404, path

    async def test_the_alert_lookup_needs_the_token(self, worker_web: tuple[Any, int]) -> None:
        """Without the bearer token the answer is 401 and holds nothing but the error."""
        _, port = worker_web
        url = f"http://127.0.0.1:{port}/alerts/hospice-handoff-missed%3A9434797373%3ARX1%3AM1/"
        async with aiohttp.ClientSession() as client:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                async with client.get(url, headers=headers) as r:
                    assert r.status == 401
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
                    assert await r.json() == {"error": "unauthorized"}


class TestHttpIngestToken:
    async def test_a_request_without_the_token_is_not_read(self, tmp_path: Path) -> None:
        """With http.token_file, a POST without the token gets 401 and reaches no pipeline."""
        token = tmp_path / "token"
        token.write_text("ingest-token\n")
        sink = RecordingSink()
        server = HttpServer(HttpSettings(port=0, token_file=token), sink)
        await server.start()
        url = f"http://127.0.0.1:{server.port}{PATH}"
        message = b"MSH|^~\\&|A|RX1|B|C|20260101||ADT^A01|C1|P|2.5\r"
        try:
            async with aiohttp.ClientSession() as client:
                async with client.post(url, data=message) as r:
                    assert r.status == 401
                async with client.post(
                    url, data=message, headers={"Authorization": "Bearer wrong"}
                ) as r:
                    assert r.status == 401
                assert sink.received == []
                async with client.post(
                    url, data=message, headers={"Authorization": "Bearer ingest-token"}
                ) as r:
                    assert r.status == 200
            assert sink.received == [message.rstrip(b"\r")]  # iter_feed drops the trailing CR
        finally:
            await server.stop()


def carebus(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")}
    return subprocess.Popen(
        [sys.executable, "-m", "carebus", *args],
        cwd=REPO_ROOT,
        env={**clean, "PYTHONPATH": str(REPO_ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class TestRefusesToStart:
    @pytest.mark.parametrize(
        ("command", "env", "starts_with"),
        [
            (
                ["listen"],
                {"CAREBUS_MLLP_HOST": "0.0.0.0"},
                "carebus: refusing to start: mllp on 0.0.0.0",
            ),
            (
                ["worker"],
                {"CAREBUS_WORKER_WEB_HOST": "0.0.0.0"},
                "carebus: refusing to start: worker.web on 0.0.0.0",
            ),
            (
                ["dashboard", "--host", "0.0.0.0"],
                {},
                "carebus: refusing to start: dashboard on 0.0.0.0",
            ),
        ],
    )
    def test_an_unprotected_public_bind_refuses_with_one_line(
        self, command: list[str], env: dict[str, str], starts_with: str
    ) -> None:
        """The real command exits 2 with one line on stderr and binds nothing."""
        env = {"CAREBUS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", **env}
        proc = carebus(*command, env=env)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, err
        assert err.endswith("\n") and err.count("\n") == 1, err
        assert err.startswith(starts_with), err

    def test_an_override_starts_and_readyz_says_so(self) -> None:
        """With metrics.allow_insecure the dashboard starts off loopback and /readyz names it."""
        port = free_port()
        env = {
            "CAREBUS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "CAREBUS_METRICS_ALLOW_INSECURE": "true",
        }
        proc = carebus(
            "dashboard", "--host", "0.0.0.0", "--port", str(port), "--no-feedwatch", env=env
        )
        try:
            deadline = time.monotonic() + 60
            body = None
            while body is None:
                assert proc.poll() is None, proc.communicate()[1]
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5):
                        pass
                except urllib.error.HTTPError as exc:  # 503: no Kafka, as intended here
                    body = json.load(exc)
                except urllib.error.URLError:
                    assert time.monotonic() < deadline, "the dashboard never listened"
                    time.sleep(0.2)
            detail = body["checks"]["exposure"]["detail"]
            assert body["checks"]["exposure"]["ok"] is True
            assert detail.startswith("insecure (allow_insecure): dashboard on 0.0.0.0")
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        assert "exposure.insecure" in err
