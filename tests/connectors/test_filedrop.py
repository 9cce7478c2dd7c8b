"""Tests for connectors/filedrop.py: files in, messages published, files moved after."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from carebus.errors import KafkaUnavailable
from carebus.metrics import Metrics
from carebus.settings import FileDropSettings, MllpSettings, Settings
from carebus.topics import TopicNames
from connectors.dedup import Deduplicator
from connectors.filedrop import (
    FileDrop,
    FileReport,
    Refusal,
    _move_with_report,
    open_for_writing,
)
from connectors.mllp.allowlist import Peer
from connectors.pipeline import IngestObserver, Outcome, Pipeline
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

    async def test_temporary_and_hidden_files_are_left_alone(self, drop: FileDrop) -> None:
        """Temporary and hidden files are never taken, however old."""
        (drop.directory / "partial.hl7.tmp").write_bytes(adt("X1"))
        (drop.directory / "partial.hl7.part").write_bytes(adt("X2"))
        (drop.directory / ".hidden.hl7").write_bytes(adt("X3"))
        assert await drop.scan(settle=False) == []
        assert sorted(p.name for p in drop.directory.iterdir() if p.is_file()) == [
            ".hidden.hl7",
            "partial.hl7.part",
            "partial.hl7.tmp",
        ]

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


class FakeClock:
    """A wall clock the test sets."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settled_at(path: Path, settle_s: float) -> float:
    """The wall-clock time at which ``path``, as it is now, has been quiet for ``settle_s``."""
    st = os.stat(path)
    return max(st.st_mtime, st.st_ctime) + settle_s


def reason_of(folder: Path, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / f"{name}.reason.json").read_text())
    return loaded


class TestCompleteFilesOnly:
    async def test_a_writer_pausing_mid_message_never_gets_a_truncated_message_accepted(
        self, tmp_path: Path, pipeline: Pipeline, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A file still open for writing is not taken though settled; once closed, it is, once."""
        clock = FakeClock(0.0)
        drop = FileDrop(
            FileDropSettings(directory=tmp_path / "drop", poll_interval_s=0.1, settle_s=2.0),
            pipeline,
            clock=clock,
        )
        drop.directory.mkdir(parents=True)
        message = adt("W1")
        path = drop.directory / "slow.hl7"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, message[: len(message) // 2])
            past = time.time() - 3600
            os.utime(path, (past, past))
            clock.now = settled_at(path, 2.0) + 60  # paused far longer than poll and settle
            assert await drop.scan() == []
            assert await drop.scan(settle=False) == []  # open for writing: never taken
            assert path.exists()
            assert reader.end_offsets(topics.raw) == 0
            os.write(fd, message[len(message) // 2 :])
        finally:
            os.close(fd)
        clock.now = settled_at(path, 2.0)
        [report] = await drop.scan()
        assert (report.messages, report.accepted, report.rejected) == (1, 1, [])
        assert await drop.scan() == []
        assert reader.end_offsets(topics.raw) == 1
        [record] = reader.read(topics.raw)
        assert record.value == message.rstrip(b"\r")  # the whole message, not half

    async def test_a_file_is_taken_only_once_quiet_for_settle_s(
        self, tmp_path: Path, pipeline: Pipeline
    ) -> None:
        """A closed file is left alone until the later of its mtime and ctime is settle_s old."""
        clock = FakeClock(0.0)
        drop = FileDrop(
            FileDropSettings(directory=tmp_path / "drop", settle_s=5.0), pipeline, clock=clock
        )
        drop.directory.mkdir(parents=True)
        path = drop.directory / "fresh.hl7"
        path.write_bytes(adt("S1"))
        clock.now = settled_at(path, 5.0) - 0.01
        assert await drop.scan() == []
        assert path.exists()
        clock.now = settled_at(path, 5.0)
        [report] = await drop.scan()
        assert report.accepted == 1

    async def test_an_mtime_set_in_the_past_does_not_skip_the_settle_wait(
        self, tmp_path: Path, pipeline: Pipeline
    ) -> None:
        """Setting the mtime back (touch -d, cp -p) still leaves the file alone for settle_s."""
        clock = FakeClock(0.0)
        drop = FileDrop(
            FileDropSettings(directory=tmp_path / "drop", settle_s=5.0), pipeline, clock=clock
        )
        drop.directory.mkdir(parents=True)
        path = drop.directory / "copied.hl7"
        path.write_bytes(adt("S2"))
        past = time.time() - 3600
        os.utime(path, (past, past))
        clock.now = os.stat(path).st_ctime + 1.0  # an hour after the mtime, 1 s after the ctime
        assert await drop.scan() == []
        assert path.exists()


class TestOpenForWriting:
    def test_finds_a_descriptor_open_for_writing_only(self, tmp_path: Path) -> None:
        """Write-only and read-write descriptors count as writers; read-only ones do not."""
        path = tmp_path / "f.hl7"
        path.write_bytes(b"x")
        st = os.stat(path)
        key = (st.st_dev, st.st_ino)
        for flags in (os.O_WRONLY, os.O_RDWR):
            fd = os.open(path, flags)
            try:
                assert open_for_writing([st]) == {key}
            finally:
                os.close(fd)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert open_for_writing([st]) == set()
        finally:
            os.close(fd)

    def test_other_files_are_not_reported(self, tmp_path: Path) -> None:
        """A writer of another file does not mark the asked file as being written."""
        (tmp_path / "a").write_bytes(b"a")
        asked = os.stat(tmp_path / "a")
        with open(tmp_path / "b", "wb"):
            assert open_for_writing([asked]) == set()


class TestRefusedFiles:
    async def test_a_symlink_is_moved_itself_never_followed(
        self, drop: FileDrop, tmp_path: Path, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A symlink goes to failed/ as a link with a reason file; its target is not read."""
        target = tmp_path / "elsewhere.hl7"
        target.write_bytes(adt("L1"))
        (drop.directory / "link.hl7").symlink_to(target)
        assert await drop.scan(settle=False) == []
        moved = drop.failed / "link.hl7"
        assert moved.is_symlink()
        assert os.readlink(moved) == str(target)
        assert target.read_bytes() == adt("L1")
        saved = reason_of(drop.failed, "link.hl7")
        assert (saved["reason"], saved["detail"]) == ("not-a-regular-file", "symbolic link")
        assert reader.end_offsets(topics.raw) == 0

    async def test_a_fifo_is_refused_without_blocking(self, drop: FileDrop) -> None:
        """A FIFO with no writer is refused at once, not waited on."""
        os.mkfifo(drop.directory / "pipe.hl7")
        assert await asyncio.wait_for(drop.scan(settle=False), 30) == []
        assert stat.S_ISFIFO(os.lstat(drop.failed / "pipe.hl7").st_mode)
        assert reason_of(drop.failed, "pipe.hl7")["detail"] == "FIFO"

    async def test_a_file_swapped_for_a_symlink_or_fifo_after_listing_is_caught(
        self, drop: FileDrop, tmp_path: Path
    ) -> None:
        """The check is made on the opened descriptor, so a swap after the listing is refused."""
        path = drop.directory / "swap.hl7"
        path.write_bytes(adt("SW1"))
        listed = os.lstat(path)
        path.unlink()
        (tmp_path / "secret").write_bytes(b"not for carebus")
        path.symlink_to(tmp_path / "secret")
        refusal = drop._load(path, listed, set())
        assert isinstance(refusal, Refusal)
        assert (refusal.reason, refusal.detail) == ("not-a-regular-file", "symbolic link")
        path.unlink()
        os.mkfifo(path)
        refusal = drop._load(path, listed, set())
        assert isinstance(refusal, Refusal)
        assert (refusal.reason, refusal.detail) == ("not-a-regular-file", "FIFO")

    async def test_a_hard_link_is_refused_unread(
        self, drop: FileDrop, tmp_path: Path, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A file with a second name (a hard link) is moved to failed/ unread: a writer
        cannot have carebus publish a file it could only link to."""
        elsewhere = tmp_path / "not-the-writers.hl7"
        elsewhere.write_bytes(adt("HL1"))
        os.link(elsewhere, drop.directory / "linked.hl7")
        assert await drop.scan(settle=False) == []
        saved = reason_of(drop.failed, "linked.hl7")
        assert (saved["reason"], saved["detail"]) == ("not-a-regular-file", "hard link (2 names)")
        assert elsewhere.read_bytes() == adt("HL1")
        assert reader.end_offsets(topics.raw) == 0

    async def test_a_planted_report_link_is_never_written_through(
        self, drop: FileDrop, tmp_path: Path
    ) -> None:
        """A symlink planted where a report would go is left alone (its target untouched);
        the file and its report get another name, side by side."""
        victim = tmp_path / "victim.txt"
        victim.write_text("precious")
        (drop.failed / "pipe.hl7.reason.json").symlink_to(victim)
        (drop.done / "ok.hl7.report.json").symlink_to(victim)
        os.mkfifo(drop.directory / "pipe.hl7")
        (drop.directory / "ok.hl7").write_bytes(adt("PL1"))
        await drop.scan(settle=False)
        assert victim.read_text() == "precious"
        for folder, name, suffix in (
            (drop.failed, "pipe", ".reason.json"),
            (drop.done, "ok", ".report.json"),
        ):
            [moved] = [p for p in folder.glob(f"{name}.2*") if p.suffix == ".hl7"]
            assert not moved.is_symlink()
            report = folder / (moved.name + suffix)
            assert not report.is_symlink()
            assert json.loads(report.read_text())["file"] == f"{name}.hl7"
            assert (folder / f"{name}.hl7{suffix}").is_symlink()  # the plant, as it was

    @pytest.mark.parametrize("folder", ["done", "failed"])
    async def test_a_symlinked_done_or_failed_folder_takes_nothing(
        self, drop: FileDrop, tmp_path: Path, topics: TopicNames, reader: TopicReader, folder: str
    ) -> None:
        """When done/ or failed/ is a symlink no file is taken or moved through it, the
        task stops (to be restarted), and readiness names the folder."""
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (drop.directory / folder).rmdir()
        (drop.directory / folder).symlink_to(elsewhere)
        (drop.directory / "feed.hl7").write_bytes(adt("SL1"))
        with pytest.raises(NotADirectoryError):
            await drop.scan(settle=False)
        with pytest.raises(NotADirectoryError):
            await drop.run()
        assert (drop.directory / "feed.hl7").exists()
        assert list(elsewhere.iterdir()) == []
        assert reader.end_offsets(topics.raw) == 0
        drop.running = True  # as if run() were up: the folder alone makes it not ready
        ok, detail = drop.readiness()
        assert not ok and folder in detail

    def test_a_folder_swapped_for_a_link_at_the_move_is_not_followed(self, tmp_path: Path) -> None:
        """The move goes through a descriptor opened without following links: a target
        folder that is a symlink by then is refused, and nothing lands behind it."""
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (tmp_path / "done").symlink_to(elsewhere)
        path = tmp_path / "feed.hl7"
        path.write_bytes(b"x")
        with pytest.raises(NotADirectoryError):
            _move_with_report(path, tmp_path / "done", FileReport(file="feed.hl7"), ".report.json")
        assert path.exists() and list(elsewhere.iterdir()) == []

    async def test_a_file_over_the_size_limit_is_refused_and_the_next_is_taken(
        self, tmp_path: Path, pipeline: Pipeline, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A file over max_file_bytes goes to failed/ unread; the scan goes on with the next."""
        limit = len(adt("OK1")) + 10
        drop = FileDrop(
            FileDropSettings(directory=tmp_path / "drop", max_file_bytes=limit), pipeline
        )
        drop.directory.mkdir(parents=True)
        big = drop.directory / "a-big.hl7"
        big.write_bytes(adt("BIG1") + b"\n" + adt("BIG2"))
        os.utime(big, (1, 1))  # the oldest: taken first
        (drop.directory / "b-ok.hl7").write_bytes(adt("OK1"))
        [report] = await drop.scan(settle=False)
        assert report.file == "b-ok.hl7"
        saved = reason_of(drop.failed, "a-big.hl7")
        assert saved["reason"] == "file-too-large"
        assert saved["size"] == (drop.failed / "a-big.hl7").stat().st_size
        assert "PATIENT" not in json.dumps(saved)
        assert reader.end_offsets(topics.raw) == 1

    async def test_an_unreadable_file_is_refused(
        self, drop: FileDrop, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file that cannot be opened (EACCES) goes to failed/ with the error as its reason."""
        path = drop.directory / "locked.hl7"
        path.write_bytes(adt("U1"))
        real_open = os.open

        def refuse_locked(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if Path(file).name == "locked.hl7":
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_open(file, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse_locked)
        assert await drop.scan(settle=False) == []
        monkeypatch.undo()
        saved = reason_of(drop.failed, "locked.hl7")
        assert (saved["reason"], saved["detail"]) == ("unreadable", "PermissionError: EACCES")

    async def test_an_unexpected_error_fails_that_file_only(
        self, tmp_path: Path, pipeline: Pipeline, topics: TopicNames, reader: TopicReader
    ) -> None:
        """A file whose processing raises goes to failed/ (internal-error); the next is taken."""
        drop = FileDrop(
            FileDropSettings(directory=tmp_path / "drop"), FailingSink(pipeline, "a-boom.hl7")
        )
        drop.directory.mkdir(parents=True)
        (drop.directory / "a-boom.hl7").write_bytes(adt("E1"))
        os.utime(drop.directory / "a-boom.hl7", (1, 1))
        (drop.directory / "b-fine.hl7").write_bytes(adt("E2"))
        [report] = await drop.scan(settle=False)
        assert report.file == "b-fine.hl7"
        saved = reason_of(drop.failed, "a-boom.hl7")
        assert (saved["reason"], saved["detail"]) == ("internal-error", "RuntimeError")
        assert reader.end_offsets(topics.raw) == 1

    async def test_kafka_unavailable_leaves_the_file_in_place(
        self, tmp_path: Path, pipeline: Pipeline
    ) -> None:
        """'Kafka did not take it' is not a bad file: it stays for the next poll."""
        drop = FileDrop(
            FileDropSettings(directory=tmp_path / "drop"),
            FailingSink(pipeline, "wait.hl7", KafkaUnavailable("broker down")),
        )
        drop.directory.mkdir(parents=True)
        (drop.directory / "wait.hl7").write_bytes(adt("K1"))
        with pytest.raises(KafkaUnavailable):
            await drop.scan(settle=False)
        assert (drop.directory / "wait.hl7").exists()
        assert not drop.failed.exists()  # nothing refused

    async def test_refusals_are_counted_by_reason(self, tmp_path: Path, pipeline: Pipeline) -> None:
        """Each refused file adds one to carebus_filedrop_files_refused_total for its reason."""
        metrics = Metrics(role="listener")
        drop = FileDrop(
            FileDropSettings(directory=tmp_path / "drop", max_file_bytes=10),
            pipeline,
            observer=metrics,
        )
        drop.directory.mkdir(parents=True)
        (drop.directory / "big.hl7").write_bytes(adt("C1"))
        os.mkfifo(drop.directory / "pipe.hl7")
        await drop.scan(settle=False)
        assert sample(metrics, "carebus_filedrop_files_refused_total", reason="file-too-large") == 1
        assert (
            sample(metrics, "carebus_filedrop_files_refused_total", reason="not-a-regular-file")
            == 1
        )


class FailingSink:
    """A pipeline that raises ``error`` for the messages of one file, else passes them on."""

    def __init__(self, inner: Pipeline, name: str, error: Exception | None = None) -> None:
        self._inner = inner
        self._name = name
        self._error = error or RuntimeError("boom")

    @property
    def observer(self) -> IngestObserver:
        return self._inner.observer

    async def submit(
        self, raw: bytes, peer: Peer, received_time: datetime, *, origin: str = ""
    ) -> Outcome:
        if origin.startswith(f"file:{self._name}#"):
            raise self._error
        return await self._inner.submit(raw, peer, received_time, origin=origin)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class Pauses:
    """Records the supervisor's pauses; runs ``on_pause`` (the test's action) at each."""

    def __init__(self, on_pause: Any = None) -> None:
        self.seen: list[float] = []
        self.readiness: list[tuple[bool, str]] = []
        self.on_pause = on_pause
        self.drop: FileDrop | None = None
        self.event = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.seen.append(seconds)
        assert self.drop is not None
        self.readiness.append(self.drop.readiness())
        if self.on_pause is not None:
            self.on_pause(len(self.seen))
        self.event.set()


async def until(condition: Any, timeout_s: float = 30.0) -> None:
    """Wait (yielding to the loop) until ``condition()`` holds."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout_s)


class TestSupervision:
    async def test_a_crashing_task_is_restarted_with_growing_pauses_and_counted(
        self, tmp_path: Path, pipeline: Pipeline
    ) -> None:
        """While the folder cannot be created the task restarts after 1, 2, 4 s; then it runs."""
        blocker = tmp_path / "parent"
        blocker.write_bytes(b"a file where the folder's parent should be")

        def fix(count: int) -> None:
            if count == 3:
                blocker.unlink()

        pauses = Pauses(fix)
        metrics = Metrics(role="listener")
        drop = FileDrop(
            FileDropSettings(directory=blocker / "drop", poll_interval_s=0.1),
            pipeline,
            observer=metrics,
            pause=pauses,
        )
        pauses.drop = drop
        task = asyncio.create_task(drop.supervise())
        try:
            await until(lambda: drop.running)
            assert pauses.seen == [1.0, 2.0, 4.0]
            assert all(not ok for ok, _ in pauses.readiness)
            assert "not running" in pauses.readiness[0][1]
            assert drop.readiness()[0]
            assert drop.restarts == 3
            assert sample(metrics, "carebus_filedrop_restarts_total") == 3
        finally:
            drop.stop()
            await asyncio.wait_for(task, 30)
        assert not drop.readiness()[0]

    async def test_a_vanished_folder_crashes_the_task_which_recreates_it(
        self, drop: FileDrop, pipeline: Pipeline
    ) -> None:
        """Removing the folder while it runs is a crash; the restarted task makes it again."""
        pauses = Pauses()
        supervised = FileDrop(
            FileDropSettings(directory=drop.directory, poll_interval_s=0.1), pipeline, pause=pauses
        )
        pauses.drop = supervised
        task = asyncio.create_task(supervised.supervise())
        try:
            await until(lambda: supervised.running)
            shutil.rmtree(drop.directory)
            await asyncio.wait_for(pauses.event.wait(), 30)
            assert pauses.seen == [1.0]
            assert pauses.readiness[0][0] is False
            await until(lambda: supervised.running and drop.directory.is_dir())
            assert supervised.readiness()[0]
        finally:
            supervised.stop()
            await asyncio.wait_for(task, 30)

    async def test_a_missing_failed_folder_is_not_ready(self, drop: FileDrop) -> None:
        """Readiness names a folder that is missing or not writable."""
        drop.running = True  # as run() sets it once the folders exist
        assert drop.readiness()[0]
        drop.failed.rmdir()
        ok, detail = drop.readiness()
        assert not ok
        assert "failed" in detail


class TestIngestWiring:
    async def test_listener_runs_the_file_drop_supervised_with_readiness_and_metrics(
        self, ingest_settings: Settings, tmp_path: Path
    ) -> None:
        """Ingest starts the supervised file drop; its check and refusal metric are live."""
        from carebus.commands.listen import filedrop_check
        from connectors.ingest import Ingest

        folder = tmp_path / "drop"
        settings = ingest_settings.replace(
            mllp=dataclasses.replace(MllpSettings(port=0)),
            filedrop=FileDropSettings(directory=folder, poll_interval_s=0.1, settle_s=0.0),
        )
        metrics = Metrics(role="listener")
        ingest = Ingest(settings, filedrop=True, observer=metrics)
        check = filedrop_check(ingest)
        assert not (await check()).ok
        await ingest.start()
        try:
            assert ingest.filedrop is not None
            drop = ingest.filedrop
            await until(lambda: drop.running)
            assert (await check()).ok
            (folder / "dev.hl7").symlink_to("/dev/null")
            await until((drop.failed / "dev.hl7.reason.json").exists)
            assert (
                sample(metrics, "carebus_filedrop_files_refused_total", reason="not-a-regular-file")
                == 1
            )
        finally:
            await ingest.stop(5.0)
        assert not (await check()).ok


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def _wait_readyz(
    port: int, proc: subprocess.Popen[bytes], status: int, timeout_s: float = 90.0
) -> dict[str, Any]:
    """Poll /readyz until it answers ``status`` (a condition, not a speed bound)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"carebus listen exited with {proc.returncode}"
        try:
            code, body = _readyz(port)
        except OSError:
            code, body = 0, {}
        if code == status:
            return body
        last = (code, body)
        time.sleep(0.2)
    raise AssertionError(f"/readyz did not answer {status} (last: {last!r})")


class TestListenReadiness:
    def test_readyz_has_the_file_drop_and_fails_while_a_folder_is_missing(
        self, ingest_settings: Settings, tmp_path: Path
    ) -> None:
        """`carebus listen --file-drop` is ready only while the file drop runs with its folders."""
        folder = tmp_path / "drop"
        metrics_port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")} | {
            "CAREBUS_KAFKA_BOOTSTRAP_SERVERS": ingest_settings.bootstrap_servers,
            "CAREBUS_BROKER_PORT": str(ingest_settings.broker.port),
            "CAREBUS_TOPICS_PREFIX": ingest_settings.topics.prefix,
            "CAREBUS_MLLP_PORT": str(_free_port()),
            "CAREBUS_METRICS_LISTENER_PORT": str(metrics_port),
            "CAREBUS_FILEDROP_DIRECTORY": str(folder),
            "CAREBUS_LOG_FORMAT": "json",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "carebus", "listen", "--file-drop"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            body = _wait_readyz(metrics_port, proc, 200)
            assert body["checks"]["filedrop"]["ok"] is True
            (folder / "failed").rmdir()
            body = _wait_readyz(metrics_port, proc, 503)
            assert body["checks"]["filedrop"] == {
                "ok": False,
                "detail": f"folder not writable: {folder / 'failed'}",
            }
            assert body["checks"]["mllp"]["ok"] is True
            (folder / "failed").mkdir()
            _wait_readyz(metrics_port, proc, 200)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
