"""``carebus run``: a whole region on one machine, started and stopped as one.

In order:

1. the local Kafka broker, only when no cluster is configured
   (``settings.uses_local_broker``; a broker already running is used as it is);
2. the topics (:func:`carebus.topics.apply`);
3. the synthetic region config (:func:`carebus.synth.region_yaml`), written to
   ``RUN_DIR/region.yaml``, and three child processes, each
   ``python -m carebus [--config FILE] COMMAND`` with the caller's environment plus
   ``CAREBUS_WORKER_REGION_CONFIG`` naming that file; each one's output goes to
   ``RUN_DIR/logs/NAME.log``:

   - ``listener``: ``carebus listen``, ready when ``/readyz`` on
     ``metrics.listener_port`` answers 200 (Kafka reached, MLLP port listening);
   - ``worker``: ``carebus worker``, ready when ``/readyz`` on ``metrics.worker_port``
     answers 200;
   - ``dashboard``: ``carebus dashboard``, ready when ``/readyz`` on
     ``metrics.dashboard_port`` answers 200;

4. an alert reader: every alert committed to the alerts topic from now on, handed
   to the :class:`Reporter` (the terminal prints one line each, without the patient);
5. the demo feed: :func:`carebus.synth.messages` sent over MLLP with
   :func:`carebus.replay.replay` at the chosen rate, with a progress bar.

It runs until SIGINT, SIGTERM or SIGHUP (exit status 0), or until a child exits on
its own or a part fails (exit status 1, saying which). Then it stops what it
started, in reverse order: the feed and the alert reader, then each child (SIGTERM
to its process group, SIGKILL after ``stop_timeout_s``), then the broker if ``run``
started it. Writing to a closed or broken standard output or error (a ``tee`` that
died with the same Ctrl-C, a closed terminal) never stops that sequence: the
terminal is written through :class:`carebus.commands.run.Console`, which drops what
it cannot write.

Nothing outlives the run, however it ends. Before anything else it starts a
*warden* (``carebus run --stop --lifeline FD``, output in ``RUN_DIR/logs/warden.log``)
that holds the read end of a pipe (the lifeline) whose only write end this process
holds. The kernel closes that end when this process exits for any reason, SIGKILL
included, so the warden reads end-of-file exactly then; if the run did not finish
its own stopping (the pids file is still there) the warden runs the same stopping
sequence as :func:`stop_run`, in the same order (the listener first, so its
messages in flight still reach the broker, which stops last and cleanly on
SIGTERM). One ordered stopper rather than a death signal in each child: children
that each learned of the death on their own would stop at once, the broker with
them, before the listener had finished its messages. After a clean stop the run
removes the pids file, closes the lifeline and waits for the warden to exit.

While it runs ``RUN_DIR/pids`` (JSON: name -> pid and start time) names every
process of the run: ``run``, ``warden``, ``broker`` (when the run started it) and
the children. A later run that finds any of them still running refuses to start,
in one line that says to use ``carebus run --stop`` (:func:`stop_run`); entries
whose process is gone, or whose pid now belongs to another process (its start time
differs), are stale and the file is removed without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from carebus.commands.generate import DEFAULT_START
from carebus.errors import CarebusError, ConfigError, KafkaUnavailable
from carebus.log import get_logger
from carebus.settings import Settings
from carebus.topics import TopicNames

if TYPE_CHECKING:
    from carebus.replay import ReplaySummary

log = get_logger(__name__)

RUN_DIR = Path(".carebus/run")
#: The children, in start order (they stop in the reverse order).
CHILDREN: tuple[str, ...] = ("listener", "worker", "dashboard")
_COMMANDS = {"listener": "listen", "worker": "worker", "dashboard": "dashboard"}
REGION_ENV = "CAREBUS_WORKER_REGION_CONFIG"
#: The process that stops the run's others if the run itself is killed.
WARDEN = "warden"
#: The signals that stop a run as Ctrl-C does (SIGHUP: its terminal was closed).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: When the demo feed's first patient arrives: ``carebus generate``'s default, so
#: ``carebus run --seed S --patients N`` sends what ``carebus generate`` writes.
FEED_START = datetime.fromisoformat(DEFAULT_START)
ALERT_SCHEMA = "carebus.alerts.Alert"
_POLL_S = 0.25


class RunFailed(CarebusError):
    """A part of the region did not start, or stopped on its own."""


@dataclass(frozen=True)
class RunOptions:
    """What ``carebus run`` was asked to do."""

    patients: int = 200
    rate: float = 50.0
    seed: int = 1
    feed: bool = True
    #: Connections the feed uses; messages are spread by sending facility.
    connections: int = 4
    run_dir: Path = RUN_DIR
    #: The ``--config`` file given to ``carebus``, passed on to the children.
    config: Path | None = None
    ready_timeout_s: float = 120.0
    stop_timeout_s: float = 15.0


@dataclass(frozen=True)
class RunPaths:
    """Where a run keeps its files."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def region(self) -> Path:
        return self.root / "region.yaml"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"


@dataclass(frozen=True)
class Probe:
    """How to tell a child is ready: ``GET http://host:port/path`` answers 200."""

    host: str
    port: int
    path: str = "/readyz"

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    async def check(self, timeout_s: float = 2.0) -> bool:
        """True when the child answers 200."""
        return await asyncio.to_thread(_http_ok, str(self), timeout_s)


@dataclass(frozen=True)
class ChildSpec:
    """One child process: its command line, environment, log file and readiness probe."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    log_file: Path
    probe: Probe


# -- pure helpers ------------------------------------------------------------------


def reachable(host: str) -> str:
    """An address to connect to for a bind address (a wildcard means this machine)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - a bind address, mapped to loopback
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def dashboard_url(settings: Settings) -> str:
    """The dashboard's address for a browser."""
    return f"http://{reachable(settings.metrics.host)}:{settings.metrics.dashboard_port}/"


def child_env(base_env: Mapping[str, str], region: Path) -> dict[str, str]:
    """The children's environment: the caller's, with the worker's region config set."""
    return {**base_env, REGION_ENV: str(region.resolve())}


def child_specs(
    settings: Settings,
    options: RunOptions,
    *,
    python: str,
    base_env: Mapping[str, str],
) -> list[ChildSpec]:
    """The listener, worker and dashboard, in start order."""
    paths = RunPaths(options.run_dir)
    env = child_env(base_env, paths.region)
    prefix: tuple[str, ...] = (python, "-m", "carebus")
    if options.config is not None:
        prefix += ("--config", str(options.config.resolve()))
    m = settings.metrics
    probes = {
        "listener": Probe(reachable(m.host), m.listener_port),
        "worker": Probe(reachable(m.host), m.worker_port),
        "dashboard": Probe(reachable(m.host), m.dashboard_port),
    }
    return [
        ChildSpec(name, (*prefix, _COMMANDS[name]), env, paths.log_file(name), probes[name])
        for name in CHILDREN
    ]


def warden_spec(
    options: RunOptions, *, python: str, base_env: Mapping[str, str], lifeline: int
) -> ChildSpec:
    """The warden: ``carebus run --stop`` once the lifeline ``lifeline`` reads end-of-file."""
    paths = RunPaths(options.run_dir)
    argv: tuple[str, ...] = (python, "-m", "carebus")
    if options.config is not None:
        argv += ("--config", str(options.config.resolve()))
    argv += ("run", "--stop", "--lifeline", str(lifeline), "--run-dir", str(paths.root.resolve()))
    # Not probed: it serves nothing; it is ready once started.
    return ChildSpec(WARDEN, argv, dict(base_env), paths.log_file(WARDEN), Probe("127.0.0.1", 0))


def ports_to_bind(settings: Settings) -> dict[str, tuple[str, int]]:
    """The ports the children will bind, by the setting that names each."""
    m = settings.metrics
    ports = {
        "mllp.port": (settings.mllp.host, settings.mllp.port),
        "metrics.listener_port": (m.host, m.listener_port),
        "metrics.worker_port": (m.host, m.worker_port),
        "worker.web_port": (settings.worker.web_host, settings.worker.web_port),
        "metrics.dashboard_port": (m.host, m.dashboard_port),
    }
    if settings.http.enabled:
        ports["http.port"] = (settings.http.host, settings.http.port)
    return ports


def busy_ports(ports: Mapping[str, tuple[str, int]]) -> list[str]:
    """The settings of ``ports`` whose port cannot be bound now, with the port."""
    busy = []
    for setting, (host, port) in ports.items():
        try:
            with socket.create_server((host, port)):
                pass
        except OSError:
            busy.append(f"{setting} {port}")
    return busy


def describe_status(status: int | None) -> str:
    """A child's exit status in words: ``status 1``, ``killed by SIGKILL``."""
    if status is None:
        return "running"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"status {status}"


# -- I/O helpers -------------------------------------------------------------------


def _http_ok(url: str, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def count_messages(options: RunOptions, cancel: threading.Event) -> int | None:
    """How many messages the demo feed has (None when cancelled first)."""
    from carebus.synth import messages

    count = 0
    for _ in messages(options.seed, FEED_START, patients=options.patients):
        count += 1
        if count % 1000 == 0 and cancel.is_set():
            return None
    return count


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal a child's process group (its session: the child and anything it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass(frozen=True)
class Recorded:
    """A process named in a run's pids file: its pid and when it started.

    ``start`` is the process's start time in clock ticks since boot (``/proc/PID/stat``
    field 22), which tells the recorded process from a later one given the same pid;
    None when unknown (an older pids file). A ``broker`` entry with pid 0 means the
    run was starting the local broker and did not know its pid yet.
    """

    pid: int
    start: int | None = None

    def to_json(self) -> dict[str, int | None]:
        return {"pid": self.pid, "start": self.start}


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields or None


def start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None when it does not exist."""
    fields = _proc_stat(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def is_running(process: Recorded) -> bool:
    """True while the recorded process itself runs (not a zombie, not a reused pid)."""
    if process.pid <= 0:
        return False
    fields = _proc_stat(process.pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    if process.start is not None:
        return len(fields) >= 20 and int(fields[19]) == process.start
    # An older pids file without start times: the command line must name carebus.
    try:
        return b"carebus" in Path(f"/proc/{process.pid}/cmdline").read_bytes()
    except OSError:
        return False


def read_pids(path: Path) -> dict[str, Recorded]:
    """The processes a run recorded (empty when there is no readable file).

    Values are ``{"pid": N, "start": T}``; a bare pid (an older file) is read too.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    pids = {}
    for name, value in data.items():
        if isinstance(value, dict):
            pid, start = value.get("pid"), value.get("start")
        else:
            pid, start = value, None
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
            continue
        if pid == 0 and name != "broker":
            continue
        pids[str(name)] = Recorded(pid, start if isinstance(start, int) else None)
    return pids


def _wait_stopped(process: Recorded, timeout_s: float) -> bool:
    """Poll until the process is gone; False if it still runs after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while is_running(process):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def stop_recorded(process: Recorded, timeout_s: float) -> str:
    """Stop a recorded process that is not our child (``stopped``, ``killed`` or ``had exited``).

    SIGTERM to its process group (each child leads its own session), SIGKILL after
    ``timeout_s``, then SIGKILL to whatever it started and left in its group.
    """
    if not is_running(process):
        return "had exited"
    _signal_group(process.pid, signal.SIGTERM)
    outcome = "stopped"
    if not _wait_stopped(process, timeout_s):
        _signal_group(process.pid, signal.SIGKILL)
        _wait_stopped(process, 10.0)
        outcome = "killed"
    _signal_group(process.pid, signal.SIGKILL)
    return outcome


def _terminate_pid(process: Recorded, timeout_s: float) -> str:
    """SIGTERM one process (not its group), SIGKILL after ``timeout_s``."""
    if not is_running(process):
        return "had exited"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(process.pid, signal.SIGTERM)
    if _wait_stopped(process, timeout_s):
        return "stopped"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(process.pid, signal.SIGKILL)
    _wait_stopped(process, 10.0)
    return "killed"


def running_processes(pids: Mapping[str, Recorded], settings: Settings) -> dict[str, int]:
    """The processes of ``pids`` that still run, by name (the local broker included)."""
    live = {name: p.pid for name, p in pids.items() if name != "broker" and is_running(p)}
    recorded = pids.get("broker")
    if recorded is not None and settings.uses_local_broker:
        from carebus import broker

        state = broker.status(settings.broker)
        if state.pid is not None and recorded.pid in (0, state.pid):
            live["broker"] = state.pid
    return live


def whole_stop_s(settings: Settings, options: RunOptions) -> float:
    """The longest a clean stop of a whole run may take (every timeout, one after another)."""
    return options.stop_timeout_s * len(CHILDREN) + settings.broker.stop_timeout_s + 30.0


def stop_run(
    settings: Settings,
    options: RunOptions,
    console: Reporter,
    *,
    lifeline: int | None = None,
) -> int:
    """``carebus run --stop``: stop an earlier run's processes cleanly, remove its pids file.

    A run still running is asked to stop (SIGTERM, as Ctrl-C) and given
    :func:`whole_stop_s` to do so; its warden is given as long to finish. Whatever
    is left is stopped here, in the run's own order: the children last started
    first, then the local broker it started. Exit status 0, or 1 when the broker
    could not be stopped.

    With ``lifeline`` (the warden) it first waits until that pipe's other end is
    closed, that is until the run's process has exited, however it ended.
    """
    paths = RunPaths(options.run_dir)
    if lifeline is not None:
        _wait_for_eof(lifeline)
        if not paths.pids.exists():
            return 0  # the run stopped everything itself
        console.say("carebus run has exited without stopping; stopping what it started")
    pids = read_pids(paths.pids)
    me = os.getpid()
    live = {name: pid for name, pid in running_processes(pids, settings).items() if pid != me}
    if not live:
        if lifeline is None:
            console.say(f"no carebus run is running in {paths.root}")
        paths.pids.unlink(missing_ok=True)
        return 0
    bound = whole_stop_s(settings, options)
    for name in ("run", "warden"):
        process = pids.get(name)
        if process is None or process.pid == me or not is_running(process):
            continue
        if name == "run":
            console.say(f"{'run':<9} asking carebus run (pid {process.pid}) to stop ...")
            console.say(f"{'run':<9} {_terminate_pid(process, bound)}")
        elif not _wait_stopped(process, bound):
            console.say(f"{'warden':<9} {_terminate_pid(process, 0.0)}")
    failed = False
    for name in reversed(CHILDREN):
        process = pids.get(name)
        if process is not None and is_running(process):
            outcome = stop_recorded(process, options.stop_timeout_s)
            console.say(f"{name:<9} {outcome} (pid {process.pid})")
    recorded = pids.get("broker")
    if recorded is not None and running_processes({"broker": recorded}, settings):
        from carebus import broker

        try:
            pid = broker.stop(settings.broker)
        except CarebusError as exc:
            console.warn(f"the local broker did not stop: {exc}")
            failed = True
        else:
            if pid is not None:
                console.say(f"{'broker':<9} stopped (pid {pid})")
    paths.pids.unlink(missing_ok=True)
    return 1 if failed else 0


def _wait_for_eof(fd: int) -> None:
    """Block until every write end of the pipe ``fd`` reads from is closed."""
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


# -- the children ------------------------------------------------------------------


class Child:
    """A started child process."""

    def __init__(self, spec: ChildSpec, proc: subprocess.Popen[bytes]) -> None:
        self.spec = spec
        self.proc = proc

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exit_status(self) -> int | None:
        """None while it runs, else its exit status."""
        return self.proc.poll()


class Supervisor:
    """Starts children, writes their pids, notices one that exits, stops them all."""

    def __init__(self, pids_file: Path, *, run_pid: int) -> None:
        self.pids_file = pids_file
        self.children: list[Child] = []
        self._pids: dict[str, Recorded] = {}
        self._run_pid = run_pid
        self._written = False

    def spawn(self, spec: ChildSpec, *, pass_fds: tuple[int, ...] = ()) -> Child:
        """Start ``spec`` in its own session, output to its log file."""
        spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_file.open("ab") as out:
            proc = subprocess.Popen(
                list(spec.argv),
                env=dict(spec.env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                pass_fds=pass_fds,
            )
        child = Child(spec, proc)
        self.children.append(child)
        self.record(spec.name, proc.pid)
        log.debug("run.child.started", child=spec.name, process=proc.pid)
        return child

    def record(self, name: str, pid: int) -> None:
        """Add a process to the pids file (the run's own first)."""
        if not self._pids and name != "run":
            self._pids["run"] = Recorded(self._run_pid, start_time(self._run_pid))
        self._pids[name] = Recorded(pid, start_time(pid) if pid > 0 else None)
        self._write()

    def forget(self, name: str) -> None:
        """Take a process out of the pids file."""
        if self._pids.pop(name, None) is not None:
            self._write()

    def _write(self) -> None:
        self.pids_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.pids_file.with_suffix(".partial")
        data = {name: p.to_json() for name, p in self._pids.items()}
        partial.write_text(json.dumps(data) + "\n", encoding="utf-8")
        partial.replace(self.pids_file)
        self._written = True

    def exited(self) -> Child | None:
        """The first child that is no longer running, if any."""
        for child in self.children:
            if child.exit_status() is not None:
                return child
        return None

    def stop_all(self, timeout_s: float) -> list[tuple[str, str]]:
        """Stop every child, last started first; what happened to each."""
        outcomes = []
        for child in reversed(self.children):
            outcomes.append((child.name, self.stop(child, timeout_s)))
        return outcomes

    @staticmethod
    def stop(child: Child, timeout_s: float) -> str:
        """SIGTERM, SIGKILL after ``timeout_s``; ``stopped``, ``killed`` or ``had exited``."""
        proc = child.proc
        status = proc.poll()
        if status is not None:
            outcome = f"had exited ({describe_status(status)})"
        else:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
                outcome = "stopped"
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(10.0)
                outcome = "killed"
        # Anything the child started in its session and left behind goes too.
        _signal_group(proc.pid, signal.SIGKILL)
        log.debug("run.child.stopped", child=child.name, process=proc.pid, outcome=outcome)
        return outcome

    def clear(self) -> None:
        """Remove the pids file this supervisor wrote (everything it named has stopped)."""
        if self._written:
            self.pids_file.unlink(missing_ok=True)


# -- what a person sees -------------------------------------------------------------


class Reporter(Protocol):
    """Where a run reports to (``carebus.commands.run.Console`` on a terminal)."""

    #: How often the feed's progress is reported, in seconds.
    interval_s: float

    def say(self, text: str) -> None:
        """A line of news."""

    def warn(self, text: str) -> None:
        """A warning or the reason for a failure."""

    def alert(self, record: Mapping[str, Any]) -> None:
        """A ``carebus.alerts.Alert`` record just committed to the alerts topic."""

    def feed_total(self, total: int | None) -> None:
        """How many messages the feed has, once counted."""

    def progress(self, summary: ReplaySummary) -> None:
        """How far the feed is."""

    def feed_done(self, summary: ReplaySummary) -> None:
        """The feed has ended (sent, or stopped early: ``summary.aborted``)."""


# -- the run -----------------------------------------------------------------------


def run_region(
    settings: Settings,
    options: RunOptions,
    *,
    base_env: Mapping[str, str],
    python: str,
    console: Reporter,
) -> int:
    """Run the region until SIGINT/SIGTERM (0) or a failure (1); leave nothing running."""
    return asyncio.run(_Run(settings, options, base_env, python, console).main())


class _Run:
    def __init__(
        self,
        settings: Settings,
        options: RunOptions,
        base_env: Mapping[str, str],
        python: str,
        console: Reporter,
    ) -> None:
        self.settings = settings
        self.options = options
        self.paths = RunPaths(options.run_dir)
        self.specs = child_specs(settings, options, python=python, base_env=base_env)
        self.console = console
        self.supervisor = Supervisor(self.paths.pids, run_pid=os.getpid())
        self.names = TopicNames.from_settings(settings.topics)
        self.stop = asyncio.Event()
        self.failure: str | None = None
        self.broker_owned = False
        self.tasks: list[asyncio.Task[Any]] = []
        self.cancel_count = threading.Event()
        self.python = python
        self.base_env = base_env
        self.warden: Child | None = None
        self.lifeline: int | None = None

    # The lifecycle ---------------------------------------------------------------

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        # A write to a closed pipe must fail as an error the Console drops, never kill.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        # SIGHUP only when not ignored already: `nohup carebus run` keeps running.
        handled = [
            sig
            for sig in STOP_SIGNALS
            if sig != signal.SIGHUP or signal.getsignal(sig) != signal.SIG_IGN
        ]
        for sig in handled:
            loop.add_signal_handler(sig, self.stop.set)
        try:
            await self._start()
            await self.stop.wait()
        except RunFailed as exc:
            self.failure = self.failure or str(exc)
        finally:
            await self._shutdown()
            for sig in handled:
                loop.remove_signal_handler(sig)
        if self.failure:
            self.console.warn(self.failure)
            return 1
        return 0

    async def _start(self) -> None:
        self._check_previous_run()
        self._check_settings()
        self._start_warden()
        self._background(self._watch_children(), "watching the children")
        if self.options.feed:
            self._background(self._count(), "counting the feed", fatal=False)
        await self._start_broker()
        if self.stop.is_set():
            return
        await self._apply_topics()
        if self.stop.is_set():
            return
        self._prepare_files()
        children = [self.supervisor.spawn(spec) for spec in self.specs]
        for child in children:
            self.console.say(
                f"{child.name:<9} starting (pid {child.pid}, log {child.spec.log_file})"
            )
        await asyncio.gather(*(self._wait_ready(child) for child in children))
        if self.stop.is_set():
            return
        reader_ready = asyncio.Event()
        self._background(self._read_alerts(reader_ready), "the alert reader")
        await self._until(reader_ready.wait())
        if self.stop.is_set():
            return
        self._print_ready()
        if self.options.feed:
            self._background(self._send_feed(), "the feed")

    async def _shutdown(self) -> None:
        self.stop.set()
        self.cancel_count.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.supervisor.children:
            self.console.say("stopping ...")
        outcomes = await asyncio.to_thread(self.supervisor.stop_all, self.options.stop_timeout_s)
        for name, outcome in outcomes:
            self.console.say(f"{name:<9} {outcome}")
        if self.broker_owned:
            from carebus import broker

            try:
                pid = await asyncio.to_thread(broker.stop, self.settings.broker)
            except CarebusError as exc:
                self.failure = self.failure or f"the local broker did not stop: {exc}"
            else:
                if pid is not None:
                    self.console.say(f"{'broker':<9} stopped")
        self.supervisor.clear()
        await asyncio.to_thread(self._release_warden)

    def _start_warden(self) -> None:
        """Start the warden, holding the lifeline's only write end (module docstring)."""
        read_end, write_end = os.pipe()  # neither is inherited by what this process starts
        try:
            spec = warden_spec(
                self.options, python=self.python, base_env=self.base_env, lifeline=read_end
            )
            self.warden = self.supervisor.spawn(spec, pass_fds=(read_end,))
        except OSError as exc:
            os.close(write_end)
            raise RunFailed(f"cannot start the warden: {exc}") from exc
        finally:
            os.close(read_end)
        self.lifeline = write_end
        # The warden is no child to stop in turn: it stops by itself once released.
        self.supervisor.children.remove(self.warden)

    def _release_warden(self) -> None:
        """Close the lifeline (everything has stopped) and wait for the warden to exit."""
        if self.lifeline is not None:
            os.close(self.lifeline)
            self.lifeline = None
        if self.warden is not None:
            try:
                self.warden.proc.wait(30.0)
            except subprocess.TimeoutExpired:
                self.warden.proc.kill()
                self.warden.proc.wait(10.0)

    def _background(self, coro: Awaitable[Any], what: str, *, fatal: bool = True) -> None:
        task = asyncio.ensure_future(coro)

        def done(t: asyncio.Task[Any]) -> None:
            if t.cancelled() or t.exception() is None:
                return
            exc = t.exception()
            if fatal:
                self._fail(f"{what} failed: {_describe(exc)}")
            else:
                log.warning("run.task.failed", task=what, error=type(exc).__name__)

        task.add_done_callback(done)
        self.tasks.append(task)

    def _fail(self, reason: str) -> None:
        if self.failure is None and not self.stop.is_set():
            self.failure = reason
        self.stop.set()

    async def _until(self, awaitable: Awaitable[Any]) -> None:
        """Wait for ``awaitable`` unless the run is stopped first."""
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, stopper):
                if not t.done():
                    t.cancel()
            await asyncio.gather(task, stopper, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    # The steps ---------------------------------------------------------------------

    def _check_previous_run(self) -> None:
        """Refuse to start while a process of an earlier run here runs; drop a stale file."""
        live = running_processes(read_pids(self.paths.pids), self.settings)
        if live:
            named = ", ".join(f"{name} {pid}" for name, pid in live.items())
            raise ConfigError(
                f"an earlier carebus run in {self.paths.root} is still running (pids: {named}); "
                "stop it with `carebus run --stop`"
            )
        self.paths.pids.unlink(missing_ok=True)
        self.supervisor.record("run", os.getpid())

    def _check_settings(self) -> None:
        if self.options.feed and self.settings.mllp.tls_certfile is not None:
            raise ConfigError(
                "the MLLP listener is configured for TLS; the demo feed is sent in plain "
                "MLLP: use --no-feed and send with `carebus replay --tls ...`"
            )
        busy = busy_ports(ports_to_bind(self.settings))
        if busy:
            raise ConfigError(
                f"port(s) already in use: {', '.join(busy)}; stop what holds them or set "
                "other ports (for example CAREBUS_MLLP_PORT)"
            )

    async def _count(self) -> None:
        total = await asyncio.to_thread(count_messages, self.options, self.cancel_count)
        self.console.feed_total(total)

    async def _start_broker(self) -> None:
        if not self.settings.uses_local_broker:
            self.console.say(f"{'kafka':<9} {self.settings.kafka.bootstrap_servers} (configured)")
            return
        from carebus import broker

        b = self.settings.broker
        self.console.say(f"{'kafka':<9} starting the local broker at {broker.address(b)} ...")
        # Recorded before it has a pid: if this process is killed while the broker
        # starts, the warden stops the broker this home then runs.
        if not broker.status(b).running:
            self.supervisor.record("broker", 0)
        # Not cancellable half-way: a Ctrl-C now stops the broker once it is up.
        result = await asyncio.to_thread(broker.start, b)
        if result.started:
            self.broker_owned = True
            self.supervisor.record("broker", result.pid)
            self.console.say(
                f"{'kafka':<9} local broker started (pid {result.pid}) in {result.seconds:.0f} s"
            )
        else:
            self.supervisor.forget("broker")
            self.console.say(f"{'kafka':<9} local broker already running (pid {result.pid})")

    async def _apply_topics(self) -> None:
        from carebus.topics import apply

        reports = await asyncio.to_thread(apply, self.settings)
        created = sum(1 for r in reports if r.status == "created")
        for report in reports:
            if report.status == "drift":
                drift = "; ".join(str(d) for d in report.drift)
                self.console.warn(f"topic {report.name}: {drift} (see `carebus topics apply`)")
        self.console.say(
            f"{'topics':<9} {len(reports)} ready, {created} created (prefix {self.names.prefix})"
        )

    def _prepare_files(self) -> None:
        from carebus.synth import region_yaml

        self.paths.logs.mkdir(parents=True, exist_ok=True)
        self.paths.region.write_text(region_yaml(), encoding="utf-8")
        # The worker needs its data directory's parent to exist.
        self.settings.worker.data_dir.mkdir(parents=True, exist_ok=True)

    async def _watch_children(self) -> None:
        while not self.stop.is_set():
            child = self.supervisor.exited()
            if child is None and self.warden is not None and self.warden.exit_status() is not None:
                child = self.warden
            if child is not None:
                status = describe_status(child.exit_status())
                self._fail(
                    f"the {child.name} exited unexpectedly ({status}); see {child.spec.log_file}"
                )
                return
            await asyncio.sleep(_POLL_S)

    async def _wait_ready(self, child: Child) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.ready_timeout_s
        probe = child.spec.probe
        while not self.stop.is_set():
            if await probe.check():
                self.console.say(f"{child.name:<9} ready ({probe})")
                return
            if loop.time() >= deadline:
                raise RunFailed(
                    f"the {child.name} was not ready within {self.options.ready_timeout_s:g} s "
                    f"({probe} did not answer); see {child.spec.log_file}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)

    def _print_ready(self) -> None:
        s = self.settings
        lines = [
            "",
            "carebus is running:",
            f"  dashboard  {dashboard_url(s)}",
            f"  MLLP       {reachable(s.mllp.host)}:{s.mllp.port}",
            f"  alerts     topic {self.names.alerts} "
            f"(per provider: {self.names.alerts_for('<CODE>')})",
            f"  logs       {self.paths.logs}/",
        ]
        if self.options.feed:
            lines.append(
                f"  feed       {self.options.patients} patients, seed {self.options.seed}, "
                f"{self.options.rate:g} msg/s"
            )
        lines += ["Alerts appear below as they are raised. Ctrl-C stops everything.", ""]
        for line in lines:
            self.console.say(line)

    async def _read_alerts(self, ready: asyncio.Event) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaError

        from carebus.kafka import aiokafka_config

        topic = self.names.alerts
        # Without a group the consumer is given every partition of the topic.
        consumer = AIOKafkaConsumer(
            topic,
            **aiokafka_config(self.settings),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        try:
            await consumer.start()
            try:
                tps = sorted(consumer.assignment())
                if not tps:
                    raise RunFailed(f"topic {topic} has no partitions")
                # Only alerts committed from now on: the end offsets, fixed before the feed.
                await consumer.seek_to_end(*tps)
                for tp in tps:
                    await consumer.position(tp)
                ready.set()
                while True:
                    batch = await consumer.getmany(timeout_ms=500)
                    for records in batch.values():
                        for record in records:
                            self._show_alert(record.value)
            finally:
                await consumer.stop()
        except KafkaError as exc:
            raise KafkaUnavailable(f"cannot read {topic}: {type(exc).__name__}") from exc

    def _show_alert(self, value: bytes | None) -> None:
        import schemas.codec
        from schemas.errors import DecodeError, UnknownSchema

        if value is None:
            return
        try:
            schema, record = schemas.codec.decode(value)
        except (DecodeError, UnknownSchema) as exc:
            log.warning("run.alert.undecodable", error=type(exc).__name__)
            return
        if schema == ALERT_SCHEMA:
            self.console.alert(record)

    async def _send_feed(self) -> None:
        from carebus.replay import Outgoing, ReplayOptions, replay
        from carebus.synth import messages

        o = self.options
        feed = (Outgoing(m.raw) for m in messages(o.seed, FEED_START, patients=o.patients))
        replay_options = ReplayOptions(
            host=reachable(self.settings.mllp.host),
            port=self.settings.mllp.port,
            rate=o.rate,
            connections=o.connections,
        )
        summary = await replay(
            feed,
            replay_options,
            on_progress=self.console.progress,
            progress_interval_s=self.console.interval_s,
        )
        self.console.feed_done(summary)
        if not self.stop.is_set():
            self.console.say("The feed is done; alerts still due appear below. Ctrl-C stops.")


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, CarebusError):
        return str(exc)
    return type(exc).__name__
