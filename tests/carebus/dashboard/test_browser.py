"""End to end: ``carebus dashboard`` in headless Chromium, updating as records arrive.

Runs the real command in a subprocess against the real broker, drives Debian's
chromium (``.ci/install-browser``) with Playwright, writes raw, dead-letter and
alert records with the listener's headers, and watches the page's numbers change.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from playwright.sync_api import Page, sync_playwright

from carebus.kafka import kafka_python_config
from carebus.settings import Settings
from schemas.codec import encode
from tests.carebus.kafka_records import (
    create_carebus_topics,
    deadletter_headers,
    produce,
    raw_headers,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NHS = "9434765919"
WAIT_MS = 30_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"carebus dashboard exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError("carebus dashboard did not become ready")


@pytest.fixture
def dashboard(kafka_isolated: Settings, tmp_path: Path) -> Iterator[str]:
    """A running ``carebus dashboard`` process on a free port; stopped afterwards."""
    region = tmp_path / "region.yaml"
    region.write_text(
        "providers:\n"
        "  RX1: {name: Hospital, kind: hospital, expected_interval: 1h}\n"
        "  G0001: {name: Surgery, kind: gp}\n"
        "  HSP01: {name: Hospice, kind: hospice, expected_interval: 4s}\n"
    )
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CAREBUS_") or k.startswith("CAREBUS_KAFKA_")
    }
    env["CAREBUS_KAFKA_BOOTSTRAP_SERVERS"] = kafka_isolated.bootstrap_servers
    env["CAREBUS_TOPICS_PREFIX"] = kafka_isolated.topics.prefix
    env["CAREBUS_LOG_FORMAT"] = "json"
    log = (tmp_path / "dashboard.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "carebus",
            "dashboard",
            "--port",
            str(port),
            "--since",
            "1h",
            "--region",
            str(region),
            "--feedwatch-every",
            "0.3",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "dashboard.log").read_text()


@pytest.fixture
def page() -> Iterator[Page]:
    """A page in Debian's headless chromium."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def text_becomes(page: Page, selector: str, expected: str) -> None:
    page.wait_for_function(
        "([sel, want]) => { const e = document.querySelector(sel);"
        " return e !== null && e.textContent.trim() === want; }",
        arg=[selector, expected],
        timeout=WAIT_MS,
    )


def read_ops(settings: Settings, topic: str, want: int) -> list[dict[str, Any]]:
    """The first ``want`` ops alerts (JSON), waiting up to 30 s for them."""
    consumer = KafkaConsumer(
        **kafka_python_config(settings), group_id=None, enable_auto_commit=False
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len(out) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                out += [json.loads(r.value) for r in records]
        return sorted(out, key=lambda o: str(o["raised_at"]))
    finally:
        consumer.close()


def alert(rule: str) -> bytes:
    return encode(
        "carebus.alerts.Alert",
        {
            "rule": rule,
            "patient": NHS,
            "raised_at": datetime.now(UTC),
            "recipients": ["RX1"],
            "dedup_key": f"{rule}:{NHS}:M9",
            "evidence": ["M9"],
            "summary": "test alert",
        },
    )


@pytest.mark.integration
class TestDashboardInChromium:
    def test_numbers_change_as_messages_arrive(
        self, kafka_isolated: Settings, dashboard: str, page: Page
    ) -> None:
        """Feeds, dead letters and alerts on the page follow the records sent to Kafka."""
        names = create_carebus_topics(kafka_isolated)
        now = datetime.now(UTC)
        produce(
            kafka_isolated,
            [
                (names.raw, b"RX1|A1", b"MSH|1", raw_headers("RX1", now, "A1")),
                (names.raw, b"RX1|A2", b"MSH|2", raw_headers("RX1", now, "A2")),
                (
                    names.deadletter,
                    b"RX1|A3",
                    b"junk",
                    deadletter_headers("RX1", now, "A3", "unparseable"),
                ),
            ],
        )
        page.goto(dashboard + "/?interval=500")
        text_becomes(page, "#connection", "live")
        text_becomes(page, "#received-total", "2")
        text_becomes(page, 'tr[data-provider="RX1"] .messages', "2")
        text_becomes(page, 'tr[data-provider="RX1"] .state', "ok")
        text_becomes(page, "#deadletters-total", "1")
        text_becomes(page, 'tr[data-reason="unparseable"] .count', "1")
        text_becomes(page, "#alerts-total", "0")
        # HSP01 is expected every 4 s and has sent nothing in the last hour.
        text_becomes(page, 'tr[data-provider="HSP01"] .state', "QUIET")
        assert page.locator('tr[data-provider="HSP01"]').get_attribute("class") == "quiet"
        # The same process watches the feeds: HSP01's silence goes out on the ops topic.
        (silent,) = read_ops(kafka_isolated, names.ops, want=1)
        assert (silent["kind"], silent["provider"], silent["last_seen"]) == (
            "feed-silent",
            "HSP01",
            None,
        )

        later = datetime.now(UTC)
        produce(
            kafka_isolated,
            [
                (names.raw, b"G0001|B1", b"MSH|3", raw_headers("G0001", later, "B1")),
                (names.raw, b"HSP01|C1", b"MSH|4", raw_headers("HSP01", later, "C1")),
                (names.raw, b"RX1|A4", b"MSH|5", raw_headers("RX1", later, "A4")),
                (
                    names.deadletter,
                    b"G0001|B2",
                    b"junk",
                    deadletter_headers("G0001", later, "B2", "invalid-identifier"),
                ),
                (names.alerts, NHS.encode(), alert("death-notified"), []),
                (names.alerts, NHS.encode(), alert("death-notified"), []),
                (names.alerts, NHS.encode(), alert("eol-admission"), []),
            ],
        )
        text_becomes(page, "#received-total", "5")
        text_becomes(page, 'tr[data-provider="RX1"] .messages', "3")
        text_becomes(page, 'tr[data-provider="G0001"] .messages', "1")
        text_becomes(page, 'tr[data-provider="G0001"] .rejected', "1")
        text_becomes(page, "#deadletters-total", "2")
        text_becomes(page, 'tr[data-reason="invalid-identifier"] .count', "1")
        text_becomes(page, "#alerts-total", "3")
        text_becomes(page, 'tr[data-rule="death-notified"] .count', "2")
        text_becomes(page, 'tr[data-rule="eol-admission"] .count', "1")
        text_becomes(page, f'tr[data-topic="{names.raw}"] .total', "5")

        content = page.content()
        assert NHS not in content
        with urllib.request.urlopen(dashboard + "/api/status", timeout=5) as resp:
            assert NHS not in json.dumps(json.load(resp))

        # HSP01 was heard again: one feed-resumed follows the one feed-silent.
        ops = read_ops(kafka_isolated, names.ops, want=2)
        assert [(o["kind"], o["provider"]) for o in ops[:2]] == [
            ("feed-silent", "HSP01"),
            ("feed-resumed", "HSP01"),
        ]
        assert {o["provider"] for o in ops} == {"HSP01"}
