"""Conformance: every message of a real third-party corpus gives events or a reasoned rejection.

The corpus is ../shared/corpus/fhir-converter-hl7v2 (139 sample messages from
microsoft/FHIR-Converter: HL7 2.3 to 2.8, BOMs, mixed line ends, Z-segments, many
message types carebus does not translate). It goes through ``carebus translate``
as a user would run it; the counts are pinned so that they cannot silently shrink:
a change that translates fewer messages, or rejects more, fails here and must be
looked at (update the numbers only for a reason you can state).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastavro.validation import validate

import schemas
from carebus.errors import MessageRejected
from connectors.hl7 import iter_feed, parse_message
from connectors.translate import translate
from schemas import codec
from schemas.codec import parse

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "fhir-converter-hl7v2"
FEEDS = sorted(CORPUS.glob("*.hl7"))

MESSAGES = 139
EVENTS = 113
REJECTED = 70
TRANSLATED = MESSAGES - REJECTED  # 69 messages give events
REJECTIONS_BY_REASON = {"unsupported-message-type": 63, "missing-required-field": 7}
EVENTS_BY_SCHEMA = {
    "carebus.events.PatientDied": 43,
    "carebus.events.Encounter": 20,
    "carebus.events.Document": 13,
    "carebus.events.Appointment": 13,
    "carebus.events.Order": 10,
    "carebus.events.PatientDemographics": 6,
    "carebus.events.PatientMerged": 3,
    "carebus.events.Result": 3,
    "carebus.events.Referral": 2,
}
REJECTION_LINE = re.compile(
    r"^(?P<file>[^:]+\.hl7):(?P<position>\d+): (?P<reason>[a-z-]+)"
    r"(?: \(control id (?P<control_id>[^)]+)\))?: (?P<detail>.+)$"
)


@pytest.fixture(scope="module")
def run() -> subprocess.CompletedProcess[str]:
    """``carebus translate`` over every corpus file, once for the module."""
    assert len(FEEDS) == 139
    return subprocess.run(
        [sys.executable, "-m", "carebus", "translate", *map(str, FEEDS)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        check=False,
    )


class TestCorpusThroughTheCommand:
    def test_every_feed_is_read(self, run: subprocess.CompletedProcess[str]) -> None:
        """The command exits 0 and nothing raises (no traceback on stderr)."""
        assert run.returncode == 0, run.stderr[-2000:]
        assert "Traceback" not in run.stderr

    def test_counts_are_pinned(self, run: subprocess.CompletedProcess[str]) -> None:
        """Messages, events and rejections are exactly the pinned numbers."""
        assert (
            run.stderr.splitlines()[-1]
            == f"{MESSAGES} messages: {EVENTS} events, {REJECTED} rejected"
        )

    def test_every_event_line_is_a_known_schema(
        self, run: subprocess.CompletedProcess[str]
    ) -> None:
        """Each stdout line is one JSON event of a carebus schema, in the pinned mix."""
        lines = [json.loads(line) for line in run.stdout.splitlines()]
        assert Counter(line["schema"] for line in lines) == EVENTS_BY_SCHEMA
        assert all(set(line) == {"schema", "record"} for line in lines)

    def test_every_rejection_is_reasoned(self, run: subprocess.CompletedProcess[str]) -> None:
        """Each rejection names file, position and a known reason; they add up as pinned."""
        rejections = [REJECTION_LINE.match(line) for line in run.stderr.splitlines()[:-1]]
        assert all(rejections), run.stderr
        assert Counter(m["reason"] for m in rejections if m) == REJECTIONS_BY_REASON
        assert all(m["control_id"] for m in rejections if m)


class TestCorpusInProcess:
    def test_every_message_translates_or_is_rejected_and_events_round_trip(self) -> None:
        """Each message gives valid, round-tripping events or a MessageRejected; nothing else."""
        parsed = {name: parse(schemas.schema(name)) for name in schemas.EVENT_SCHEMAS}
        received = datetime(2026, 1, 1, tzinfo=UTC)
        translated = rejected = 0
        for feed in FEEDS:
            for item in iter_feed(feed.read_bytes()):
                try:
                    events = translate(
                        parse_message(item.raw), raw=item.raw, received_time=received
                    )
                except MessageRejected as exc:
                    assert exc.reason and exc.detail
                    rejected += 1
                    continue
                assert events
                translated += 1
                for event in events:
                    validate(event.record, parsed[event.schema], raise_errors=True, strict=True)
                    assert codec.decode(codec.encode(event.schema, event.record)) == (
                        event.schema,
                        event.record,
                    )
        assert (translated, rejected) == (TRANSLATED, REJECTED)
