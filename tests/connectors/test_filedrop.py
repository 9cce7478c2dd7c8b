"""Tests for connectors/filedrop.py: files in, messages published, files moved after."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from carebus.settings import FileDropSettings, Settings
from carebus.topics import TopicNames
from connectors.dedup import Deduplicator
from connectors.filedrop import FileDrop
from connectors.pipeline import Pipeline
from connectors.publish import Publisher
from tests.connectors.ingest_helpers import TopicReader, adt

pytestmark = pytest.mark.integration


@pytest.fixture
async def pipeline(ingest_settings: Settings, topics: TopicNames) -> AsyncIterator[Pipeline]:
    pub = Publisher(ingest_settings)
    await pub.start([topics.raw, topics.events, topics.deadletter])
    try:
        yield Pipeline(pub, topics, publish_timeout_s=10.0, dedup=Deduplicator(3600))
    finally:
        await pub.stop()


@pytest.fixture
def drop(tmp_path: Path, pipeline: Pipeline) -> FileDrop:
    watcher = FileDrop(FileDropSettings(directory=tmp_path / "drop", poll_interval_s=0.1), pipeline)
    for folder in (watcher.directory, watcher.done, watcher.failed):
        folder.mkdir(parents=True, exist_ok=True)
    return watcher


class TestFileDrop:
    async def test_plain_file_is_published_then_moved_to_done(
        self, drop: FileDrop, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A plain file's messages are published, then the file moves to done/ with a report."""
        (drop.directory / "feed.hl7").write_bytes(adt("F1") + b"\n" + adt("F2", trigger="A03"))
        [report] = await drop.scan(settle=False)
        assert (report.messages, report.accepted, report.rejected) == (2, 2, [])
        assert not (drop.directory / "feed.hl7").exists()
        assert (drop.done / "feed.hl7").exists()
        saved = json.loads((drop.done / "feed.hl7.report.json").read_text())
        assert saved["accepted"] == 2
        assert reader.end_offsets(topics.raw) == 2
        assert reader.end_offsets(topics.events) == 2

    async def test_mllp_framed_batch_with_a_reject_goes_to_failed(
        self, drop: FileDrop, topics: TopicNames, reader: TopicReader
    ) -> None:
        """An MLLP-framed file with a bad message moves to failed/ with a report of the reject."""
        bad = adt("B2").replace(b"ADT^A01^ADT_A01", b"ZZZ^Z01")
        data = b"".join(b"\x0b" + m + b"\x1c\r" for m in (adt("B1"), bad, adt("B3")))
        (drop.directory / "batch.mllp").write_bytes(data)
        [report] = await drop.scan(settle=False)
        assert report.accepted == 2
        [reject] = report.rejected
        assert (reject.position, reject.control_id, reject.reason) == (
            2,
            "B2",
            "unsupported-message-type",
        )
        assert (drop.failed / "batch.mllp").exists()
        saved = json.loads((drop.failed / "batch.mllp.report.json").read_text())
        assert saved["rejected"][0]["reason"] == "unsupported-message-type"
        assert "PATIENT" not in json.dumps(saved)  # no message content in the report
        assert reader.end_offsets(topics.events) == 2
        assert reader.end_offsets(topics.deadletter) == 1

    async def test_fhs_bhs_batch(
        self, drop: FileDrop, topics: TopicNames, reader: TopicReader
    ) -> None:
        """An FHS/BHS batch file's messages are all published; batch lines are not messages."""
        data = (
            b"FHS|^~\\&|PAS|RXA01\rBHS|^~\\&|PAS|RXA01\r"
            + adt("H1")
            + adt("H2")
            + b"BTS|2\rFTS|1\r"
        )
        (drop.directory / "batch.txt").write_bytes(data)
        [report] = await drop.scan(settle=False)
        assert (report.messages, report.accepted) == (2, 2)
        assert reader.end_offsets(topics.raw) == 2

    async def test_files_still_being_written_are_left_alone(self, drop: FileDrop) -> None:
        """Temporary and hidden files are skipped, and a new file waits until it settles."""
        (drop.directory / "partial.hl7.tmp").write_bytes(adt("X1"))
        (drop.directory / ".hidden.hl7").write_bytes(adt("X2"))
        (drop.directory / "fresh.hl7").write_bytes(adt("X3"))
        assert await drop.scan() == []  # first sight of fresh.hl7: not settled yet
        assert (drop.directory / "fresh.hl7").exists()
        assert (drop.directory / "partial.hl7.tmp").exists()
        assert (drop.directory / ".hidden.hl7").exists()

    async def test_resubmitted_file_is_not_published_twice(
        self, drop: FileDrop, topics: TopicNames, reader: TopicReader
    ) -> None:
        """The same file dropped again has its messages recognised as duplicates."""
        (drop.directory / "a.hl7").write_bytes(adt("R1"))
        await drop.scan(settle=False)
        (drop.directory / "a.hl7").write_bytes(adt("R1"))
        [report] = await drop.scan(settle=False)
        assert (report.accepted, report.duplicates) == (0, 1)
        assert reader.end_offsets(topics.raw) == 1
        assert len(list(drop.done.glob("a*.hl7"))) == 2
