"""The file-drop connector: HL7 v2 files dropped in a folder, published durably.

**What writers must do.** Write each file under a name carebus ignores (ending in
``.tmp``, ``.part`` or ``.partial``, or starting with a dot), close it, then rename
it to its final name, conventionally ``NAME.hl7``, in the same folder. A rename is
atomic: carebus sees either nothing or the whole file.

**When a file is taken.** Every ``poll_interval_s`` the folder is scanned, oldest
first. A file is taken only when all of these hold:

- its name is not a temporary or hidden one (above);
- neither its content nor its metadata has changed for ``settle_s``: the later of
  its mtime and ctime is at least ``settle_s`` old. ctime cannot be set back by a
  writer (``touch -d``, ``cp -p`` and ``rsync -t`` set mtime only), and a rename
  updates it on Linux's usual file systems (ext4, XFS, Btrfs), so a file is not
  taken within ``settle_s`` of arriving;
- no process has it open for writing (:func:`open_for_writing`);
- it is still the same file, unchanged, when opened (its inode, size, mtime and
  ctime as listed).

How "open for writing" is found: carebus reads ``/proc/*/fd`` and, for every
descriptor that points at a candidate file, the ``flags`` line of
``/proc/PID/fdinfo/FD``; write-only or read-write access means a writer. This was
chosen over a read lease (``fcntl F_SETLEASE F_RDLCK``, which the kernel refuses
while any writer has the file open) because a lease can only be taken on a file
carebus owns (or with ``CAP_LEASE``), which a folder written by another account
does not give; is not supported on NFS and some other file systems; and, if a
writer opens the file while carebus holds the lease, the kernel sends carebus
``SIGIO``, whose default action ends the process. The ``/proc`` scan has no side
effect and works on any file system, but sees only the processes whose
``/proc/PID/fd`` carebus may read: those of its own user (all of them with
``CAP_SYS_PTRACE`` or as root), in its own PID namespace, on this machine. A writer
it cannot see (another account, another container, another NFS client) is covered
by the rename convention and ``settle_s`` only. Without ``/proc`` (not Linux) the
check finds nothing.

**What is refused.** A file that is not a regular file (a symlink, FIFO, device,
socket; directories such as ``done/`` and ``failed/`` are left alone) or has more
than one name (a hard link: a writer could otherwise have carebus publish a file it
may only link to, not read), is larger than ``max_file_bytes``, cannot be opened
or read, or whose processing raised an unexpected error, is moved to ``failed/``
with ``<name>.reason.json`` next to it (file name, reason, detail, size, time: no
message content). A symlink is moved
itself, never followed: files are opened with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO
does not block the open) and checked with ``fstat`` on the opened descriptor, so a
file swapped for a symlink or FIFO after the listing is caught too. The scan then
goes on with the next file.

**Where files go.** ``done/`` and ``failed/`` must be real folders: when either is
a symlink (or not a folder), no file is taken, the task stops and is restarted
(below) and readiness says which folder is wrong. Moves and reports go through a
descriptor of the folder opened with ``O_NOFOLLOW``, so a folder swapped for a link
meanwhile is not followed either. A report is created new (``O_CREAT | O_EXCL |
O_NOFOLLOW``): it is never written through a planted link nor over an existing
file; when the name is taken, the file and its report get another (a timestamp,
then a counter). A name is checked free just before the move, which replaces
nothing but an entry planted in that instant by someone who may write in the folder.

**What is done with a file.** A file may be plain HL7, MLLP-framed, or an FHS/BHS
batch (:func:`connectors.hl7.iter_feed`). Its messages go through the
:class:`~connectors.pipeline.Pipeline` in order, one at a time. Only when every
message of a file has been dealt with durably (published, or dead-lettered with its
reason) is the file moved: to ``done/`` when all were accepted, to ``failed/`` when
any was rejected. Next to it goes ``<name>.report.json``: counts and, per rejected
message, its position, byte offset, control id, reason and detail (no message
content). When Kafka is unavailable the file stays where it is and is tried again
at the next poll; messages already published are then recognised as duplicates.

**Supervision.** :meth:`FileDrop.supervise` runs :meth:`FileDrop.run` and restarts
it when it crashes (for example when the folder disappears or cannot be listed),
after 1 s, 2 s, 4 s ... up to 60 s; the pause starts again from 1 s once a scan has
completed. Each restart is logged and counted (``carebus_filedrop_restarts_total``).
:meth:`FileDrop.readiness` is not ready while the task is down or a folder is not
writable; ``carebus listen`` adds it to ``/readyz`` as ``filedrop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from carebus.errors import KafkaUnavailable
from carebus.log import get_logger
from carebus.settings import FileDropSettings
from connectors.hl7 import iter_feed
from connectors.mllp.allowlist import Peer
from connectors.pipeline import Sink

log = get_logger(__name__)

_SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".report.json", ".reason.json")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_READ_CHUNK = 1 << 20
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_REPORT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_NAME_TRIES = 100

#: Pauses between restarts of a crashed file-drop task, in seconds.
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 60.0

#: Reasons a file is moved to ``failed/`` unread (``carebus.metrics`` folds to these).
NOT_REGULAR = "not-a-regular-file"
TOO_LARGE = "file-too-large"
UNREADABLE = "unreadable"
INTERNAL_ERROR = "internal-error"


@runtime_checkable
class FileDropObserver(Protocol):
    """Hook points for metrics; :class:`carebus.metrics.Metrics` fits this shape."""

    def filedrop_file_refused(self, reason: str) -> None: ...

    def filedrop_restarted(self) -> None: ...


class _NoObserver:
    def filedrop_file_refused(self, reason: str) -> None:
        """Do nothing."""

    def filedrop_restarted(self) -> None:
        """Do nothing."""


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


@dataclass
class Refusal:
    """Why a file was moved to ``failed/`` unread (its ``<name>.reason.json``)."""

    file: str
    reason: str
    detail: str
    size: int | None = None
    refused: str = ""

    def to_json(self) -> str:
        """The refusal as JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


Pause = Callable[[float], Awaitable[None]]


class FileDrop:
    """Watches ``settings.directory``; see the module docstring.

    ``clock`` (wall-clock seconds, as :func:`time.time`) decides whether a file has
    settled; ``pause`` waits between restarts (default: that long, or until
    :meth:`stop`). Both are there so tests can force their conditions.
    """

    def __init__(
        self,
        settings: FileDropSettings,
        pipeline: Sink,
        *,
        observer: FileDropObserver | None = None,
        clock: Callable[[], float] = time.time,
        pause: Pause | None = None,
    ) -> None:
        self._settings = settings
        self._pipeline = pipeline
        self._observer: FileDropObserver = observer or _NoObserver()
        self._clock = clock
        self._pause = pause or self._wait_unless_stopped
        self.directory = settings.directory
        self.done = settings.directory / "done"
        self.failed = settings.directory / "failed"
        self._stopping = False
        self._stop_event = asyncio.Event()
        #: True while :meth:`run` is watching the folder.
        self.running = False
        #: Times :meth:`supervise` restarted a crashed :meth:`run`.
        self.restarts = 0
        self._scans = 0

    def stop(self) -> None:
        """Finish the current message, then stop (the current file stays in place)."""
        self._stopping = True
        self._stop_event.set()

    async def _wait_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    async def supervise(self) -> None:
        """Run :meth:`run`, restarting it after a crash with a growing pause, until stopped."""
        pause = RESTART_FIRST_S
        while not self._stopping:
            scans_before = self._scans
            try:
                await self.run()
                return
            except Exception as exc:  # any crash: log, count, restart
                if self._scans > scans_before:  # it had been working: start the pauses again
                    pause = RESTART_FIRST_S
                self.restarts += 1
                self._observer.filedrop_restarted()
                log.error(
                    "file drop crashed; restarting",
                    error=type(exc).__name__,
                    detail=_os_detail(exc),
                    restarts=self.restarts,
                    restart_in_s=pause,
                )
            await self._pause(pause)
            pause = min(pause * 2, RESTART_MAX_S)

    async def run(self) -> None:
        """Poll the folder until :meth:`stop` is called (or the task is cancelled)."""
        for path in (self.directory, self.done, self.failed):
            path.mkdir(parents=True, exist_ok=True)
        self._check_folders()
        log.info("file drop watching", directory=str(self.directory))
        self.running = True
        try:
            while not self._stopping:
                try:
                    await self.scan()
                except KafkaUnavailable as exc:
                    log.warning("file drop paused: Kafka unavailable", error=type(exc).__name__)
                self._scans += 1
                await self._wait_unless_stopped(self._settings.poll_interval_s)
        finally:
            self.running = False

    def _check_folders(self) -> None:
        """NotADirectoryError when ``done/`` or ``failed/`` exists but is not a real folder."""
        for folder in (self.done, self.failed):
            if not _real_folder(folder):
                raise NotADirectoryError(errno.ENOTDIR, f"{folder.name}/ is not a real folder")

    def readiness(self) -> tuple[bool, str]:
        """(ready, detail): not ready while :meth:`run` is down or a folder is not writable."""
        if not self.running:
            return False, f"file drop not running ({self.restarts} restarts)"
        for folder in (self.directory, self.done, self.failed):
            if not os.access(folder, os.W_OK | os.X_OK):
                return False, f"folder not writable: {folder}"
        for folder in (self.done, self.failed):
            if not _real_folder(folder):
                return False, f"not a real folder (a symlink?): {folder}"
        return True, f"watching {self.directory}"

    async def scan(self, *, settle: bool = True) -> list[FileReport]:
        """Process every ready file once, oldest first; the reports of files processed.

        ``settle=False`` skips only the ``settle_s`` wait: a file open for writing
        is never taken. Files refused unread are moved to ``failed/`` and reported
        by their ``.reason.json``, not here. Raises :class:`KafkaUnavailable` when a
        file could not be finished (it stays in place), and ``OSError`` when the
        folder cannot be listed, and NotADirectoryError (nothing taken) when ``done/``
        or ``failed/`` is not a real folder (a symlink, say).
        """
        await asyncio.to_thread(self._check_folders)
        candidates = await asyncio.to_thread(self._candidates, settle)
        if not candidates:
            return []
        writing = await asyncio.to_thread(open_for_writing, [st for _, st in candidates])
        reports = []
        for path, listed in candidates:
            if self._stopping:
                break
            try:
                loaded = await asyncio.to_thread(self._load, path, listed, writing)
                if isinstance(loaded, Refusal):
                    await self._refuse(path, loaded)
                elif loaded is not None:
                    report = await self._process(path, loaded)
                    if report is not None:
                        reports.append(report)
            except (KafkaUnavailable, NotADirectoryError):
                raise  # the broker, or done/ or failed/ not a real folder: not this file's fault
            except Exception as exc:  # one bad file never stops the others
                log.error("file drop cannot process file", file=path.name, error=type(exc).__name__)
                refusal = Refusal(path.name, INTERNAL_ERROR, type(exc).__name__)
                try:
                    await self._refuse(path, refusal)
                except OSError as move_error:
                    log.error(
                        "file drop cannot move file to failed/",
                        file=path.name,
                        error=_os_detail(move_error),
                    )
        return reports

    def _candidates(self, settle: bool) -> list[tuple[Path, os.stat_result]]:
        """Files not hidden nor temporary, settled (when asked), oldest first."""
        now = self._clock()
        found = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    continue  # done/, failed/ and any other folder are left alone
                if settle and now - max(st.st_mtime, st.st_ctime) < self._settings.settle_s:
                    continue
                found.append((st.st_mtime, name, Path(entry.path), st))
        return [(path, st) for _, _, path, st in sorted(found, key=lambda f: f[:2])]

    def _load(
        self, path: Path, listed: os.stat_result, writing: set[tuple[int, int]]
    ) -> bytes | Refusal | None:
        """The file's bytes; a :class:`Refusal`; or None when it is not to be taken yet."""
        limit = self._settings.max_file_bytes
        if not stat.S_ISREG(listed.st_mode):
            return Refusal(path.name, NOT_REGULAR, _kind(listed.st_mode))
        if listed.st_size > limit:
            return Refusal(
                path.name, TOO_LARGE, f"{listed.st_size} bytes, limit {limit}", listed.st_size
            )
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            return None  # moved away since the listing
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a symlink since the listing
                return Refusal(path.name, NOT_REGULAR, "symbolic link")
            return Refusal(path.name, UNREADABLE, _os_detail(exc), listed.st_size)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return Refusal(path.name, NOT_REGULAR, _kind(st.st_mode))
            if _signature(st) != _signature(listed):
                return None  # replaced or changed since the listing: look again next poll
            if st.st_nlink != 1:
                return Refusal(path.name, NOT_REGULAR, f"hard link ({st.st_nlink} names)")
            if (st.st_dev, st.st_ino) in writing:
                log.debug("file drop waiting: file open for writing", file=path.name)
                return None
            chunks = []
            total = 0
            while total <= limit:
                try:
                    chunk = os.read(fd, min(_READ_CHUNK, limit + 1 - total))
                except OSError as exc:
                    return Refusal(path.name, UNREADABLE, _os_detail(exc), st.st_size)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            if total > limit:
                return Refusal(path.name, TOO_LARGE, f"over {limit} bytes", total)
            return b"".join(chunks)
        finally:
            os.close(fd)

    async def _refuse(self, path: Path, refusal: Refusal) -> None:
        refusal.refused = datetime.now(UTC).isoformat()
        await asyncio.to_thread(_move_with_report, path, self.failed, refusal, ".reason.json")
        self._observer.filedrop_file_refused(refusal.reason)
        log.warning(
            "file refused",
            file=path.name,
            reason=refusal.reason,
            detail=refusal.detail,
            moved_to=self.failed.name,
        )

    async def process_file(self, path: Path) -> FileReport | None:
        """Take one file now (no settle wait); None when not taken or stopped part-way.

        A file refused unread is moved to ``failed/`` with its reason; a file open
        for writing, gone, or changed meanwhile is left where it is. Raises
        NotADirectoryError when ``done/`` or ``failed/`` is not a real folder.
        """
        await asyncio.to_thread(self._check_folders)
        listed = await asyncio.to_thread(os.lstat, path)
        writing = await asyncio.to_thread(open_for_writing, [listed])
        loaded = await asyncio.to_thread(self._load, path, listed, writing)
        if isinstance(loaded, Refusal):
            await self._refuse(path, loaded)
            return None
        if loaded is None:
            return None
        return await self._process(path, loaded)

    async def _process(self, path: Path, data: bytes) -> FileReport | None:
        """Publish one file's messages and move it; None when stopped part-way."""
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
        await asyncio.to_thread(_move_with_report, path, target, report, ".report.json")
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


def open_for_writing(files: Iterable[os.stat_result]) -> set[tuple[int, int]]:
    """The (device, inode) of those ``files`` some visible process has open for writing.

    Reads ``/proc/*/fd`` and ``/proc/PID/fdinfo/FD`` (module docstring: what it
    cannot see). Empty without ``/proc``.
    """
    wanted = {(st.st_dev, st.st_ino) for st in files}
    found: set[tuple[int, int]] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in wanted or key in found:
                continue
            if _writable(f"/proc/{pid}/fdinfo/{fd}"):
                found.add(key)
    return found


def _writable(fdinfo: str) -> bool:
    """Whether the descriptor described by ``fdinfo`` was opened for writing."""
    try:
        with open(fdinfo, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("flags:"):
                    flags = int(line.split()[1], 8)
                    return flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _os_detail(exc: BaseException) -> str:
    """An error's class and errno name, never a path or content."""
    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code, "") if isinstance(code, int) else ""
    return f"{type(exc).__name__}: {name}" if name else type(exc).__name__


def _real_folder(folder: Path) -> bool:
    """False when ``folder`` is something other than a directory (a symlink to one,
    say); a missing one is fine (it is made when first needed)."""
    try:
        return stat.S_ISDIR(os.lstat(folder).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _open_folder(folder: Path) -> int:
    """A descriptor of ``folder``; NotADirectoryError when it is a symlink or no folder."""
    try:
        return os.open(folder, _FOLDER_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotADirectoryError(errno.ENOTDIR, f"{folder.name}/ is not a real folder") from exc
        raise


def _create_report(folder_fd: int, name: str, text: str) -> bool:
    """Write a new file ``name`` in the folder; False when the name is taken (by
    anything: a file, a link, even a dangling one: it is never followed)."""
    try:
        fd = os.open(name, _REPORT_FLAGS, 0o644, dir_fd=folder_fd)
    except FileExistsError:
        return False
    try:
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data) :]
    except BaseException:
        os.close(fd)
        os.unlink(name, dir_fd=folder_fd)
        raise
    os.close(fd)
    return True


def _names(path: Path) -> Iterable[str]:
    """Names to try for ``path`` in its new folder: its own, then stamped ones."""
    yield path.name
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    yield f"{path.stem}.{stamp}{path.suffix}"
    for n in range(1, _MAX_NAME_TRIES):
        yield f"{path.stem}.{stamp}-{n}{path.suffix}"


def _move_with_report(path: Path, target: Path, report: FileReport | Refusal, suffix: str) -> None:
    """Move ``path`` (a symlink itself, never its target) into ``target``, report beside it.

    ``target`` must be a real folder (NotADirectoryError otherwise); the report is
    created new, never through a link or over a file; a name taken (by the file or
    its report) means the next of :func:`_names`.
    """
    target.mkdir(parents=True, exist_ok=True)
    folder_fd = _open_folder(target)
    try:
        text = report.to_json()
        for name in _names(path):
            if not _create_report(folder_fd, name + suffix, text):
                continue
            try:
                os.lstat(name, dir_fd=folder_fd)
            except FileNotFoundError:
                break  # both names are ours
            os.unlink(name + suffix, dir_fd=folder_fd)
        else:
            raise FileExistsError(errno.EEXIST, f"no free name in {target.name}/")
        try:
            os.replace(path, name, dst_dir_fd=folder_fd)
        except OSError:
            os.unlink(name + suffix, dir_fd=folder_fd)
            raise
    finally:
        os.close(folder_fd)
