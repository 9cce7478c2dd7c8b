"""Tests for examples/consume_alerts.py: the integrator's alert consumer example.

The example must decode what carebus writes (with nothing but fastavro and the
schema files) and, run as a script against a real broker, print the alerts of a
provider's topic.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import schemas.codec
from carebus.errors import MessageRejected
from carebus.settings import Settings
from carebus.synth import messages
from carebus.topics import ensure, provider_alert_topic
from connectors.hl7 import parse_message
from connectors.translate import translate

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "consume_alerts.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("consume_alerts", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


def alert(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "rule": "hospice-handoff-missed",
        "patient": "9990000018",
        "raised_at": datetime(2026, 3, 2, 14, 5, tzinfo=UTC),
        "recipients": ["HSP01", "XRA"],
        "dedup_key": "hospice-handoff-missed:9990000018:MSG000123",
        "evidence": ["MSG000123"],
        "summary": "Discharged to hospice 24 h ago; no hospice admission received",
    }
    record.update(changes)
    return record


class TestDecoder:
    def test_decodes_alerts_and_status_changes(self) -> None:
        """Alerts and status changes encoded by carebus decode to the same records."""
        decoder = example.Decoder(example.DEFAULT_SCHEMAS)
        change = {
            "dedup_key": "k",
            "action": "RESOLVED",
            "by": "ward-clerk",
            "at": datetime(2026, 3, 3, 9, 0, tzinfo=UTC),
            "note": None,
        }
        for name, record in (
            ("carebus.alerts.Alert", alert()),
            ("carebus.alerts.AlertStatusChange", change),
        ):
            assert decoder.decode(schemas.codec.encode(name, record)) == (name, record)

    def test_decodes_every_event_the_bus_writes_like_carebus_does(self) -> None:
        """Events translated from a synthetic feed decode exactly as schemas.codec does."""
        decoder = example.Decoder(example.DEFAULT_SCHEMAS)
        seen = set()
        start = datetime(2026, 1, 5, 8, tzinfo=UTC)
        for synth in messages(2, start, patients=40):
            try:
                events = translate(
                    parse_message(synth.raw), raw=synth.raw, received_time=synth.time
                )
            except MessageRejected:
                continue
            for event in events:
                data = schemas.codec.encode(event.schema, event.record)
                assert decoder.decode(data) == schemas.codec.decode(data)
                seen.add(event.schema)
        assert len(seen) >= 6

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"\x00\x01plain bytes", "not Avro single-object encoding"),
            (b"\xc3\x01" + bytes(8) + b"\x00", "unknown schema fingerprint"),
        ],
    )
    def test_foreign_records_are_refused(self, data: bytes, message: str) -> None:
        """Bytes that are not carebus's single-object encoding raise ValueError."""
        decoder = example.Decoder(example.DEFAULT_SCHEMAS)
        with pytest.raises(ValueError, match=message):
            decoder.decode(data)


class TestPrintable:
    def test_patient_is_masked_by_default(self) -> None:
        """The patient key is masked in the patient field and in the dedup key."""
        line = example.printable(alert(), show_patient=False)
        parsed = json.loads(line)
        assert "9990000018" not in line
        assert parsed["patient"] == "***"
        assert parsed["dedup_key"] == "hospice-handoff-missed:***:MSG000123"
        assert parsed["raised_at"] == "2026-03-02T14:05:00+00:00"

    def test_show_patient_prints_the_record_as_it_is(self) -> None:
        """With --show-patient the alert is printed unchanged."""
        parsed = json.loads(example.printable(alert(), show_patient=True))
        assert parsed["patient"] == "9990000018"
        assert parsed["dedup_key"] == alert()["dedup_key"]


@pytest.mark.integration
class TestAgainstABroker:
    def test_prints_an_alert_from_a_providers_topic(
        self, kafka: Settings, unique_topic_prefix: str
    ) -> None:
        """Run as a script, the example prints the alert produced on a provider's topic."""
        from kafka import KafkaProducer

        from carebus.kafka import kafka_python_config

        settings = kafka.replace(
            topics=dataclasses.replace(kafka.topics, prefix=unique_topic_prefix, partitions=2)
        )
        topic = provider_alert_topic(settings.topics, "XRA")
        ensure(settings, [topic])
        record = alert()
        producer = KafkaProducer(**kafka_python_config(settings), acks="all")
        try:
            producer.send(
                topic.name,
                key=record["patient"].encode(),
                value=schemas.codec.encode("carebus.alerts.Alert", record),
                headers=[("carebus-schema", b"carebus.alerts.Alert")],
            ).get(timeout=30)
        finally:
            producer.close()
        result = subprocess.run(
            [
                sys.executable,
                str(EXAMPLE),
                "--bootstrap-servers",
                settings.bootstrap_servers,
                "--prefix",
                unique_topic_prefix,
                "--provider",
                "XRA",
                "--group",
                f"{unique_topic_prefix}-example",
                "--from-beginning",
                "--max",
                "1",
                "--idle-timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        lines = result.stdout.splitlines()
        assert len(lines) == 1
        assert json.loads(lines[0]) == {
            "rule": "hospice-handoff-missed",
            "patient": "***",
            "raised_at": "2026-03-02T14:05:00+00:00",
            "recipients": ["HSP01", "XRA"],
            "dedup_key": "hospice-handoff-missed:***:MSG000123",
            "evidence": ["MSG000123"],
            "summary": "Discharged to hospice 24 h ago; no hospice admission received",
        }
        assert "1 alert(s) read from" in result.stderr
