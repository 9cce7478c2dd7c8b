"""The file-drop connector: HL7 v2 files dropped in a folder, published durably.

Every ``poll_interval_s`` the folder is scanned for files that are no longer being
written (not hidden, not ``*.tmp``/``*.part``, unchanged for one poll interval;
writers should write under a temporary name and rename). A file may be plain HL7,
MLLP-framed, or an FHS/BHS batch (:func:`connectors.hl7.iter_feed`). Its messages
go through the :class:`~connectors.pipeline.Pipeline` in order, one at a time.

Only when every message of a file has been dealt with durably (published, or
dead-lettered with its reason) is the file moved: to ``done/`` when all were
accepted, to ``failed/`` when any was rejected. Next to it goes
``<name>.report.json``: counts and, per rejected message, its position, byte
offset, control id, reason and detail (no message content). When Kafka is
unavailable the file stays where it is and is tried again at the next poll;
messages already published are then recognised as duplicates.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from carebus.errors import KafkaUnavailable
from carebus.log import get_logger
from carebus.settings import FileDropSettings
from connectors.hl7 import iter_feed
from connectors.mllp.allowlist import Peer
from connectors.pipeline import Sink

log = get_logger(__name__)

_SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".report.json")


@dataclass
class Reject:
    """One rejected message of a file."""

    position: int
    offset: int
    control_id: str
    reason: str
    detail: str


@dataclass
class FileReport:
    """What became of one file's messages."""

    file: str
    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Reject] = field(default_factory=list)
    finished: str = ""

    @property
    def ok(self) -> bool:
        """True when no message was rejected."""
        return not self.rejected

    def to_json(self) -> str:
        """The report as JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


class FileDrop:
    """Watches ``settings.directory``; see the module docstring."""

    def __init__(self, settings: FileDropSettings, pipeline: Sink) -> None:
        self._settings = settings
        self._pipeline = pipeline
        self.directory = settings.directory
        self.done = settings.directory / "done"
        self.failed = settings.directory / "failed"
        self._sizes: dict[Path, tuple[int, float]] = {}
        self._stopping = False

    def stop(self) -> None:
        """Finish the current message, then stop (the current file stays in place)."""
        self._stopping = True

    async def run(self) -> None:
        """Poll the folder until :meth:`stop` is called (or the task is cancelled)."""
        for path in (self.directory, self.done, self.failed):
            path.mkdir(parents=True, exist_ok=True)
        log.info("file drop watching", directory=str(self.directory))
        while not self._stopping:
            try:
                await self.scan()
            except KafkaUnavailable as exc:
                log.warning("file drop paused: Kafka unavailable", error=type(exc).__name__)
            await asyncio.sleep(self._settings.poll_interval_s)

    async def scan(self, *, settle: bool = True) -> list[FileReport]:
        """Process every ready file once, oldest first; the reports of files moved.

        With ``settle`` a file is taken only once it has not changed for one poll
        interval. Raises :class:`KafkaUnavailable` when a file could not be finished.
        """
        reports = []
        for path in self._ready_files(settle=settle):
            if self._stopping:
                break
            try:
                report = await self.process_file(path)
            except OSError as exc:  # unreadable, or moved away meanwhile: try next poll
                log.warning(
                    "file drop cannot process file", file=path.name, error=type(exc).__name__
                )
                continue
            if report is not None:
                reports.append(report)
        return reports

    async def process_file(self, path: Path) -> FileReport | None:
        """Publish one file's messages and move it; None when stopped part-way."""
        data = await asyncio.to_thread(path.read_bytes)
        report = FileReport(file=path.name)
        peer = Peer("file", str(self.directory))
        for item in iter_feed(data):
            if self._stopping:
                return None
            report.messages += 1
            origin = f"file:{path.name}#{item.position}"
            outcome = await self._pipeline.submit(item.raw, peer, datetime.now(UTC), origin=origin)
            if outcome.status == "accepted":
                report.accepted += 1
            elif outcome.status == "duplicate":
                report.duplicates += 1
            elif outcome.error is not None:
                report.rejected.append(
                    Reject(
                        item.position,
                        item.offset,
                        outcome.control_id,
                        outcome.error.reason,
                        outcome.error.detail,
                    )
                )
        report.finished = datetime.now(UTC).isoformat()
        target = self.done if report.ok else self.failed
        await asyncio.to_thread(_move_with_report, path, target, report)
        log.info(
            "file processed",
            file=path.name,
            messages=report.messages,
            accepted=report.accepted,
            duplicates=report.duplicates,
            rejected=len(report.rejected),
            moved_to=target.name,
        )
        return report

    def _ready_files(self, *, settle: bool) -> list[Path]:
        now = time.time()
        ready = []
        seen = set()
        try:
            entries = list(self.directory.iterdir())
        except FileNotFoundError:
            return []
        for path in entries:
            if path.name.startswith(".") or path.name.endswith(_SKIP_SUFFIXES):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if not path.is_file():
                continue
            seen.add(path)
            signature = (stat.st_size, stat.st_mtime)
            if settle:
                previous = self._sizes.get(path)
                self._sizes[path] = signature
                quiet = now - stat.st_mtime >= self._settings.poll_interval_s
                if previous != signature or not quiet:
                    continue
            ready.append((stat.st_mtime, path.name, path))
        self._sizes = {p: s for p, s in self._sizes.items() if p in seen}
        return [path for _, _, path in sorted(ready)]


def _move_with_report(path: Path, target: Path, report: FileReport) -> None:
    target.mkdir(parents=True, exist_ok=True)
    destination = target / path.name
    if destination.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        destination = target / f"{path.stem}.{stamp}{path.suffix}"
    report_path = destination.with_name(destination.name + ".report.json")
    report_path.write_text(report.to_json(), encoding="utf-8")
    path.replace(destination)
