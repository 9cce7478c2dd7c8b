"""Tests for carebus/commands/alerts.py: status-change records and `alerts show`.

Publishing to Kafka and the worker's endpoint together are exercised in
tests/streams/integration/test_worker.py.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import schemas.codec
from carebus.commands import alerts
from carebus.errors import CarebusError

KEY = "hospice-handoff-missed:9434797373:RX1:MSG000079"


class _Worker(BaseHTTPRequestHandler):
    """Answers like the worker's status endpoint: one known key, 404 otherwise."""

    def do_GET(self) -> None:
        known = self.path == "/alerts/hospice-handoff-missed%3A9434797373%3ARX1%3AMSG000079/"
        body = json.dumps({"dedup_key": "x", "status": "OPEN" if known else "UNKNOWN"}).encode()
        self.send_response(200 if known else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def worker_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Worker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    alerts.add_arguments(parser)
    return parser.parse_args(argv)


class TestStatusChange:
    def test_record_matches_the_avro_schema(self) -> None:
        """An acknowledgement encodes as carebus.alerts.AlertStatusChange and reads back."""
        at = datetime(2026, 2, 13, 11, 20, tzinfo=UTC)
        record = alerts.status_change(KEY, "ACKNOWLEDGED", "ward-7", "on it", at=at)
        name, decoded = schemas.codec.decode(schemas.codec.encode(alerts.STATUS_SCHEMA, record))
        assert name == "carebus.alerts.AlertStatusChange"
        assert decoded == {**record, "at": at}

    def test_an_empty_key_is_refused(self) -> None:
        """A status change needs the alert's dedup key."""
        with pytest.raises(CarebusError):
            alerts.status_change("", "RESOLVED", "ward-7", None)


class TestArguments:
    def test_ack_and_resolve_need_who(self) -> None:
        """--by is required: every status change says who made it."""
        with pytest.raises(SystemExit):
            parse("ack", KEY)
        args = parse("resolve", KEY, "--by", "ward-7", "--note", "admitted")
        assert (args.action, args.dedup_key, args.by, args.note) == (
            "resolve",
            KEY,
            "ward-7",
            "admitted",
        )


class TestShow:
    def test_prints_the_workers_answer(
        self, worker_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A known key prints the status JSON and exits 0; the key is URL-quoted."""
        assert alerts.show(worker_url, KEY, timeout_s=5) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "OPEN"

    def test_unknown_key_exits_1(self, worker_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        """A key the worker knows nothing about prints its UNKNOWN answer and exits 1."""
        assert alerts.show(worker_url, "no-such-key", timeout_s=5) == 1
        assert json.loads(capsys.readouterr().out)["status"] == "UNKNOWN"

    def test_unreachable_worker_is_an_error(self) -> None:
        """No worker listening: a CarebusError naming the address, not a traceback."""
        with pytest.raises(CarebusError, match="cannot reach the worker"):
            alerts.show("http://127.0.0.1:9", KEY, timeout_s=2)
