"""Tests for carebus/run.py: ``carebus run``, the whole region in one command.

The pure parts (child specs, ports, pids file) are tested directly; the supervisor
with real, small child processes; the whole command end to end against a real
broker, as a subprocess that is sent SIGINT.
"""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import ANY

import pytest

from carebus.cli import main
from carebus.run import (
    CHILDREN,
    FEED_START,
    REGION_ENV,
    WARDEN,
    ChildSpec,
    Probe,
    Recorded,
    RunOptions,
    Supervisor,
    busy_ports,
    child_env,
    child_specs,
    count_messages,
    dashboard_url,
    describe_status,
    is_running,
    ports_to_bind,
    reachable,
    read_pids,
    start_time,
    whole_stop_s,
)
from carebus.settings import MetricsSettings, MllpSettings, Settings, load_settings
from carebus.synth import messages

NHS_LIKE = re.compile(r"(?<!\d)\d{10}(?!\d)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


class TestReachable:
    def test_wildcards_map_to_loopback(self) -> None:
        """A wildcard bind address is reached on this machine's loopback."""
        assert reachable("0.0.0.0") == "127.0.0.1"
        assert reachable("") == "127.0.0.1"
        assert reachable("::") == "::1"

    def test_named_hosts_are_kept(self) -> None:
        """A specific bind address is connected to as it is."""
        assert reachable("10.1.2.3") == "10.1.2.3"
        assert reachable("localhost") == "localhost"

    def test_dashboard_url_uses_the_dashboard_port(self) -> None:
        """The address shown for the dashboard is its bind host and port."""
        settings = Settings(metrics=MetricsSettings(host="0.0.0.0", dashboard_port=8123))
        assert dashboard_url(settings) == "http://127.0.0.1:8123/"


class TestChildSpecs:
    def specs(self, tmp_path: Path, **options: object) -> list[ChildSpec]:
        settings = Settings(
            mllp=MllpSettings(host="0.0.0.0", port=12575),
            metrics=MetricsSettings(listener_port=19464, worker_port=19465, dashboard_port=18088),
        )
        return child_specs(
            settings,
            RunOptions(run_dir=tmp_path / "run", **options),  # type: ignore[arg-type]
            python="/opt/py/bin/python",
            base_env={"PATH": "/usr/bin", REGION_ENV: "/elsewhere/region.yaml"},
        )

    def test_listener_worker_dashboard_in_start_order(self, tmp_path: Path) -> None:
        """The children are the listener, worker and dashboard, each `python -m carebus CMD`."""
        specs = self.specs(tmp_path)
        assert [s.name for s in specs] == list(CHILDREN) == ["listener", "worker", "dashboard"]
        assert [s.argv for s in specs] == [
            ("/opt/py/bin/python", "-m", "carebus", "listen"),
            ("/opt/py/bin/python", "-m", "carebus", "worker"),
            ("/opt/py/bin/python", "-m", "carebus", "dashboard"),
        ]

    def test_config_file_is_passed_on_absolute(self, tmp_path: Path) -> None:
        """A --config file given to run is given to every child, as an absolute path."""
        specs = self.specs(tmp_path, config=Path("conf/carebus.toml"))
        expected = str(Path("conf/carebus.toml").resolve())
        for spec in specs:
            assert spec.argv[3:5] == ("--config", expected)
            assert Path(spec.argv[4]).is_absolute()

    def test_environment_is_the_callers_with_the_generated_region(self, tmp_path: Path) -> None:
        """Children inherit the environment, with the worker's region set to the generated file."""
        for spec in self.specs(tmp_path):
            assert spec.env["PATH"] == "/usr/bin"
            assert spec.env[REGION_ENV] == str((tmp_path / "run" / "region.yaml").resolve())

    def test_logs_go_to_files_under_the_run_directory(self, tmp_path: Path) -> None:
        """Each child has its own log file in RUN_DIR/logs."""
        logs = [s.log_file for s in self.specs(tmp_path)]
        assert logs == [tmp_path / "run" / "logs" / f"{n}.log" for n in CHILDREN]

    def test_readiness_probes_follow_the_settings(self, tmp_path: Path) -> None:
        """Each child is ready when /readyz on its own metrics port answers."""
        probes = [s.probe for s in self.specs(tmp_path)]
        assert probes == [
            Probe("127.0.0.1", 19464),
            Probe("127.0.0.1", 19465),
            Probe("127.0.0.1", 18088),
        ]
        assert str(probes[1]) == "http://127.0.0.1:19465/readyz"

    def test_child_env_does_not_change_the_base(self) -> None:
        """Building the children's environment leaves the caller's mapping alone."""
        base = {"A": "1"}
        env = child_env(base, Path("region.yaml"))
        assert base == {"A": "1"}
        assert env["A"] == "1"
        assert env[REGION_ENV] == str(Path("region.yaml").resolve())


class TestProbe:
    @pytest.fixture
    def server(self) -> Iterator[tuple[int, list[int]]]:
        """A local HTTP server answering /readyz with the status at the head of a list."""
        statuses = [503]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(statuses[0] if self.path == "/readyz" else 404)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield int(httpd.server_address[1]), statuses
        finally:
            httpd.shutdown()
            httpd.server_close()

    async def test_ready_only_on_200(self, server: tuple[int, list[int]]) -> None:
        """/readyz answering 503 is not ready; answering 200 is."""
        port, statuses = server
        probe = Probe("127.0.0.1", port)
        assert not await probe.check()
        statuses[0] = 200
        assert await probe.check()
        assert not await Probe("127.0.0.1", port, "/other").check()

    async def test_nothing_listening_is_not_ready(self) -> None:
        """A port nobody listens on is not ready (and raises nothing)."""
        assert not await Probe("127.0.0.1", free_port()).check(timeout_s=0.5)


class TestPorts:
    def test_a_held_port_is_reported_with_its_setting(self) -> None:
        """A port another socket holds is named by the setting that chose it."""
        with socket.create_server(("127.0.0.1", 0)) as held:
            port = held.getsockname()[1]
            free = free_port()
            busy = busy_ports({"mllp.port": ("127.0.0.1", port), "x.port": ("127.0.0.1", free)})
        assert busy == [f"mllp.port {port}"]

    def test_ports_to_bind_name_every_listening_child(self) -> None:
        """The ports checked are the listener's two, the worker's two and the dashboard's."""
        assert set(ports_to_bind(Settings())) == {
            "mllp.port",
            "metrics.listener_port",
            "metrics.worker_port",
            "worker.web_port",
            "metrics.dashboard_port",
        }

    @pytest.mark.parametrize(
        ("name", "value"), [("CAREBUS_MLLP_PORT", "mllp"), ("CAREBUS_WORKER_WEB_PORT", "worker")]
    )
    def test_run_refuses_to_start_on_a_busy_port(
        self,
        name: str,
        value: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """`carebus run` stops with a usage error naming the busy port, starting nothing."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("CAREBUS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
        with socket.create_server(("127.0.0.1", 0)) as held:
            port = held.getsockname()[1]
            monkeypatch.setenv(name, str(port))
            assert main(["run", "--no-feed"]) == 2
        err = capsys.readouterr().err
        assert f"{port}" in err and "in use" in err
        assert not (tmp_path / ".carebus" / "run" / "pids").exists()
        assert not (tmp_path / ".carebus" / "run" / "logs").exists()


class TestPidsFile:
    def test_missing_or_broken_files_read_as_empty(self, tmp_path: Path) -> None:
        """No pids file, or one that is not a JSON object of pids, means no pids."""
        path = tmp_path / "pids"
        assert read_pids(path) == {}
        path.write_text("not json")
        assert read_pids(path) == {}
        path.write_text("[1, 2]")
        assert read_pids(path) == {}

    def test_entries_are_pids_with_start_times(self, tmp_path: Path) -> None:
        """Each entry is a pid with its start time; a bare pid (an older file) has none."""
        path = tmp_path / "pids"
        path.write_text(json.dumps({"run": {"pid": 10, "start": 99}, "worker": 11}))
        assert read_pids(path) == {"run": Recorded(10, 99), "worker": Recorded(11, None)}

    def test_only_positive_integer_pids_are_kept(self, tmp_path: Path) -> None:
        """Entries that are not positive integers are ignored (pid 0 only for a starting broker)."""
        path = tmp_path / "pids"
        path.write_text(
            json.dumps(
                {
                    "run": 10,
                    "worker": "x",
                    "listener": 0,
                    "dashboard": {"pid": 12, "start": "x"},
                    "broker": {"pid": 0, "start": None},
                    "other": {"pid": True},
                }
            )
        )
        assert read_pids(path) == {
            "run": Recorded(10),
            "dashboard": Recorded(12),
            "broker": Recorded(0),
        }


def sleeper(*extra: str) -> subprocess.Popen[bytes]:
    """A process in its own session that sleeps (and stops on SIGTERM)."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", *extra], start_new_session=True
    )


def recorded(proc: subprocess.Popen[bytes]) -> dict[str, int | None]:
    """A pids-file entry for ``proc``, as a run writes it."""
    return {"pid": proc.pid, "start": start_time(proc.pid)}


def write_pids(run_dir: Path, entries: dict[str, object]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "pids"
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever still runs at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


class TestProcessIdentity:
    def test_a_recorded_process_runs_while_it_lives(
        self, procs: list[subprocess.Popen[bytes]]
    ) -> None:
        """A process with its recorded start time runs until it exits (a zombie counts as gone)."""
        proc = sleeper()
        procs.append(proc)
        entry = Recorded(proc.pid, start_time(proc.pid))
        assert entry.start is not None and is_running(entry)
        proc.kill()
        deadline = time.monotonic() + 60
        # Not reaped yet: a zombie, which is no longer running.
        while Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not is_running(entry)
        proc.wait()
        assert not is_running(entry)
        assert start_time(proc.pid) is None

    def test_a_reused_pid_is_not_the_recorded_process(self) -> None:
        """The same pid with another start time is another process."""
        me = start_time(os.getpid())
        assert me is not None
        assert is_running(Recorded(os.getpid(), me))
        assert not is_running(Recorded(os.getpid(), me + 1))

    def test_without_a_start_time_the_command_line_must_name_carebus(
        self, procs: list[subprocess.Popen[bytes]]
    ) -> None:
        """An entry of an older file is taken as running only if the process runs carebus."""
        named, unnamed = sleeper("carebus"), sleeper()
        procs += [named, unnamed]
        assert is_running(Recorded(named.pid))
        assert not is_running(Recorded(unnamed.pid))


@pytest.fixture
def run_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory to run in, with a configured (unreachable) cluster; its run directory."""
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("CAREBUS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CAREBUS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    return tmp_path / ".carebus" / "run"


class TestEarlierRun:
    def test_a_running_earlier_run_is_named_in_one_line_with_how_to_stop_it(
        self,
        run_here: Path,
        procs: list[subprocess.Popen[bytes]],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A run finding an earlier run's processes says how to stop them, and starts nothing."""
        run, worker = sleeper(), sleeper()
        procs += [run, worker]
        write_pids(run_here, {"run": recorded(run), "worker": recorded(worker)})
        assert main(["run", "--no-feed"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"run {run.pid}, worker {worker.pid}" in err
        assert "`carebus run --stop`" in err
        # Left alone: stopping them is the user's call.
        assert run.poll() is None and worker.poll() is None
        assert not (run_here / "logs").exists()

    def test_stale_entries_are_removed_without_a_word(
        self,
        run_here: Path,
        monkeypatch: pytest.MonkeyPatch,
        procs: list[subprocess.Popen[bytes]],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Dead processes and pids now used by other processes are cleaned up silently."""
        unrelated = sleeper()
        procs.append(unrelated)
        gone = sleeper()
        gone.kill()
        gone.wait()
        start = start_time(unrelated.pid)
        assert start is not None
        pids = write_pids(
            run_here,
            {
                "run": {"pid": gone.pid, "start": 1},
                "worker": {"pid": unrelated.pid, "start": start + 1},  # a reused pid
                "listener": 2**22 + 7,
            },
        )
        with socket.create_server(("127.0.0.1", 0)) as held:
            # A busy port ends this run right after the check, before anything starts.
            monkeypatch.setenv("CAREBUS_MLLP_PORT", str(held.getsockname()[1]))
            assert main(["run", "--no-feed"]) == 2
        err = capsys.readouterr().err
        assert "in use" in err and "earlier" not in err
        assert not pids.exists()
        assert unrelated.poll() is None


class TestStop:
    def test_stops_what_an_earlier_run_left_last_started_first(
        self,
        run_here: Path,
        procs: list[subprocess.Popen[bytes]],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """`carebus run --stop` stops each leftover child, last started first; the file goes."""
        children = {name: sleeper() for name in CHILDREN}
        procs += children.values()
        gone_run = {"pid": 2**22 + 7, "start": 1}
        pids = write_pids(
            run_here, {"run": gone_run, **{n: recorded(p) for n, p in children.items()}}
        )
        assert main(["run", "--stop"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert [line.split()[:2] for line in out] == [
            ["dashboard", "stopped"],
            ["worker", "stopped"],
            ["listener", "stopped"],
        ]
        assert all(p.wait(60) == -signal.SIGTERM for p in children.values())
        assert not pids.exists()

    def test_a_run_still_running_is_asked_to_stop_first(
        self,
        run_here: Path,
        procs: list[subprocess.Popen[bytes]],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A live run gets SIGTERM (as Ctrl-C) and is waited for; then what it left is stopped."""
        run, worker = sleeper(), sleeper()
        procs += [run, worker]
        write_pids(run_here, {"run": recorded(run), "worker": recorded(worker)})
        assert main(["run", "--stop"]) == 0
        out = capsys.readouterr().out
        assert f"asking carebus run (pid {run.pid}) to stop" in out
        assert run.wait(60) == -signal.SIGTERM
        assert worker.wait(60) == -signal.SIGTERM

    def test_with_nothing_running_it_says_so(
        self, run_here: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With only stale entries (or no file) there is nothing to stop; the file is removed."""
        pids = write_pids(run_here, {"run": 2**22 + 7})
        assert main(["run", "--stop"]) == 0
        assert "no carebus run is running" in capsys.readouterr().out
        assert not pids.exists()
        assert main(["run", "--stop"]) == 0


def start_warden(run_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """A warden watching a lifeline whose write end (returned) this test holds."""
    read_end, write_end = os.pipe()
    warden = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "carebus",
            "run",
            "--stop",
            "--lifeline",
            str(read_end),
            "--run-dir",
            str(run_dir),
        ],
        env=env,
        pass_fds=(read_end,),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    os.close(read_end)
    return warden, write_end


class TestWarden:
    def test_stops_the_run_s_processes_once_the_lifeline_breaks(
        self, run_here: Path, procs: list[subprocess.Popen[bytes]]
    ) -> None:
        """When the lifeline's write end closes with the pids file still there, the warden stops
        every process it names and removes the file."""
        worker = sleeper()
        procs.append(worker)
        pids = write_pids(run_here, {"worker": recorded(worker)})
        warden, lifeline = start_warden(run_here, dict(os.environ))
        procs.append(warden)  # type: ignore[arg-type]
        os.close(lifeline)  # as the kernel does when `carebus run` dies, SIGKILL included
        assert warden.wait(30) == 0
        assert worker.wait(60) == -signal.SIGTERM
        assert not pids.exists()
        assert b"worker    stopped" in warden.stdout.read()  # type: ignore[union-attr]

    def test_does_nothing_after_a_run_that_stopped_cleanly(
        self, run_here: Path, procs: list[subprocess.Popen[bytes]]
    ) -> None:
        """Without a pids file (the run removed it) the warden just exits."""
        warden, lifeline = start_warden(run_here, dict(os.environ))
        procs.append(warden)  # type: ignore[arg-type]
        os.close(lifeline)
        assert warden.wait(30) == 0
        assert warden.stdout.read() == b""  # type: ignore[union-attr]


def sleeper_spec(tmp_path: Path, name: str, code: str = "import time; time.sleep(60)") -> ChildSpec:
    return ChildSpec(
        name=name,
        argv=(sys.executable, "-c", code),
        env={"PATH": os.defpath, "CHILD_NAME": name},
        log_file=tmp_path / "logs" / f"{name}.log",
        probe=Probe("127.0.0.1", 1),
    )


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    sup = Supervisor(tmp_path / "pids", run_pid=os.getpid())
    try:
        yield sup
    finally:
        sup.stop_all(1.0)


class TestSupervisor:
    def test_spawn_writes_pids_and_logs_to_the_file(
        self, tmp_path: Path, supervisor: Supervisor
    ) -> None:
        """A started child's pid is in the pids file and its output in its log file."""
        code = "import os, sys; print('hello from', os.environ['CHILD_NAME'], flush=True)"
        child = supervisor.spawn(sleeper_spec(tmp_path, "talker", code))
        assert child.proc.wait(60) == 0
        pids = read_pids(tmp_path / "pids")
        assert pids == {"run": Recorded(os.getpid(), start_time(os.getpid())), "talker": ANY}
        assert pids["talker"].pid == child.pid and pids["talker"].start is not None
        assert (tmp_path / "logs" / "talker.log").read_text() == "hello from talker\n"

    def test_stop_all_stops_in_reverse_order(self, tmp_path: Path, supervisor: Supervisor) -> None:
        """Children stop last started first, with SIGTERM, and are gone afterwards."""
        children = [supervisor.spawn(sleeper_spec(tmp_path, n)) for n in ("a", "b", "c")]
        outcomes = supervisor.stop_all(5.0)
        assert outcomes == [("c", "stopped"), ("b", "stopped"), ("a", "stopped")]
        assert all(c.proc.returncode == -signal.SIGTERM for c in children)
        assert not any(alive(c.pid) for c in children)

    def test_a_child_ignoring_sigterm_is_killed_after_the_timeout(
        self, tmp_path: Path, supervisor: Supervisor
    ) -> None:
        """SIGKILL follows when SIGTERM is not obeyed within the stop timeout."""
        code = (
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)"
        )
        child = supervisor.spawn(sleeper_spec(tmp_path, "stubborn", code))
        deadline = time.monotonic() + 60
        while "ready" not in (tmp_path / "logs" / "stubborn.log").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        assert supervisor.stop(child, 0.5) == "killed"
        assert time.monotonic() - started >= 0.5  # SIGTERM had its timeout; no upper bound
        assert child.proc.returncode == -signal.SIGKILL

    def test_what_a_child_started_goes_with_it(
        self, tmp_path: Path, supervisor: Supervisor
    ) -> None:
        """A grandchild in the child's session is killed when the child is stopped."""
        code = (
            "import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print(p.pid, flush=True); time.sleep(60)"
        )
        log = tmp_path / "logs" / "parent.log"
        supervisor.spawn(sleeper_spec(tmp_path, "parent", code))
        deadline = time.monotonic() + 60
        while not log.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        grandchild = int(log.read_text().split()[0])
        assert alive(grandchild)
        supervisor.stop_all(5.0)
        assert wait_gone(grandchild)

    def test_exited_names_a_child_that_stopped_on_its_own(
        self, tmp_path: Path, supervisor: Supervisor
    ) -> None:
        """A child that exits is reported, with its status, and not signalled again."""
        supervisor.spawn(sleeper_spec(tmp_path, "steady"))
        quitter = supervisor.spawn(sleeper_spec(tmp_path, "quitter", "raise SystemExit(3)"))
        quitter.proc.wait(60)
        assert supervisor.exited() is quitter
        outcomes = dict(supervisor.stop_all(5.0))
        assert outcomes == {"steady": "stopped", "quitter": "had exited (status 3)"}

    def test_clear_removes_the_pids_file(self, tmp_path: Path, supervisor: Supervisor) -> None:
        """Once everything has stopped the pids file is removed."""
        supervisor.record("x", 123)
        assert (tmp_path / "pids").exists()
        supervisor.clear()
        assert not (tmp_path / "pids").exists()


class TestDescribeStatus:
    def test_exit_statuses_and_signals_in_words(self) -> None:
        """Exit codes read as a status, negative ones as the signal that killed."""
        assert describe_status(0) == "status 0"
        assert describe_status(2) == "status 2"
        assert describe_status(-9) == "killed by SIGKILL"
        assert describe_status(None) == "running"


class TestCountMessages:
    def test_counts_the_messages_the_feed_sends(self) -> None:
        """The progress bar's total is the number of messages of the same feed."""
        options = RunOptions(patients=15, seed=3)
        expected = sum(1 for _ in messages(3, FEED_START, patients=15))
        assert count_messages(options, threading.Event()) == expected > 15

    def test_a_cancelled_count_gives_up(self) -> None:
        """Counting stops early (None) once cancelled."""
        cancel = threading.Event()
        cancel.set()
        assert count_messages(RunOptions(patients=300, seed=1), cancel) is None


# -- end to end ----------------------------------------------------------------------


def run_env(kafka: Settings, prefix: str) -> dict[str, str]:
    """The environment of a `carebus run` on the test broker with its own names and ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")}
    env.update({k: v for k, v in os.environ.items() if k.startswith("CAREBUS_KAFKA_")})
    env.update(
        {
            "CAREBUS_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            # the test broker is the local development broker (carebus.durability)
            "CAREBUS_BROKER_PORT": str(kafka.broker.port),
            "CAREBUS_TOPICS_PREFIX": prefix,
            "CAREBUS_TOPICS_PARTITIONS": "2",
            "CAREBUS_WORKER_APP_ID": f"{prefix}-worker",
            "CAREBUS_WORKER_TICK_INTERVAL_S": "1",
            "CAREBUS_MLLP_PORT": str(free_port()),
            "CAREBUS_METRICS_LISTENER_PORT": str(free_port()),
            "CAREBUS_WORKER_WEB_PORT": str(free_port()),
            "CAREBUS_METRICS_WORKER_PORT": str(free_port()),
            "CAREBUS_METRICS_DASHBOARD_PORT": str(free_port()),
        }
    )
    return env


def read_lines(stream: object, into: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line.rstrip("\n"))
    into.put(None)


@pytest.mark.integration
class TestRunEndToEnd:
    def test_feed_alerts_and_ctrl_c_leave_nothing_running(
        self, kafka: Settings, unique_topic_prefix: str, tmp_path: Path
    ) -> None:
        """`carebus run` prints alerts from its feed, and SIGINT stops every process it started."""
        err = (tmp_path / "stderr.txt").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "carebus", "run", "--patients", "20", "--rate", "200"],
            cwd=tmp_path,
            env=run_env(kafka, unique_topic_prefix),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
        seen: list[str] = []
        pids: dict[str, int] = {}
        try:
            deadline = time.monotonic() + 120
            while not any(line.startswith("alert ") for line in seen):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no alert within 120 s; output: {seen[-10:]}"
                try:
                    line = lines.get(timeout=remaining)
                except queue.Empty:
                    continue
                assert line is not None, f"run exited early: {seen[-10:]}"
                seen.append(line)
            pids = read_pids(tmp_path / ".carebus" / "run" / "pids")
            assert set(pids) == {"run", WARDEN, *CHILDREN}
            assert pids["run"].pid == proc.pid
            assert all(is_running(p) for p in pids.values())
            proc.send_signal(signal.SIGINT)
            assert proc.wait(90) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err.close()
        seen += [line for line in iter(lines.get, None)]
        for name in (*CHILDREN, WARDEN):
            assert wait_gone(pids[name].pid, 5.0), f"{name} ({pids[name]}) is still running"
        assert not (tmp_path / ".carebus" / "run" / "pids").exists()
        alerts = [line for line in seen if line.startswith("alert ")]
        assert alerts and all(re.match(r"alert [a-z-]+ -> [A-Z0-9,]+ raised ", a) for a in alerts)
        leaked = [NHS_LIKE.sub("#" * 10, line) for line in seen if NHS_LIKE.search(line)]
        assert not leaked, leaked  # the lines, with the digits masked
        assert any(line.startswith("  dashboard  http://127.0.0.1:") for line in seen)
        assert [line.split()[0] for line in seen[-3:]] == ["dashboard", "worker", "listener"]
        for name in CHILDREN:
            assert (tmp_path / ".carebus" / "run" / "logs" / f"{name}.log").stat().st_size > 0

    def test_a_child_that_dies_stops_the_run_with_a_failure(
        self, kafka: Settings, unique_topic_prefix: str, tmp_path: Path
    ) -> None:
        """When a child exits on its own, run says which, stops the others and exits 1."""
        stderr = tmp_path / "stderr.txt"
        with stderr.open("w") as err_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "carebus", "run", "--no-feed"],
                cwd=tmp_path,
                env=run_env(kafka, unique_topic_prefix),
                stdout=subprocess.PIPE,
                stderr=err_file,
                text=True,
            )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
        try:
            deadline = time.monotonic() + 120
            while True:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                assert line is not None, "run exited before it was ready"
                if "Ctrl-C stops everything" in line:
                    break
            pids = read_pids(tmp_path / ".carebus" / "run" / "pids")
            os.kill(pids["worker"].pid, signal.SIGKILL)
            assert proc.wait(90) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = stderr.read_text()
        assert "the worker exited unexpectedly (killed by SIGKILL)" in err
        assert "worker.log" in err
        for name in ("listener", "dashboard", WARDEN):
            assert wait_gone(pids[name].pid, 5.0), f"{name} ({pids[name]}) is still running"


# -- however a run ends ----------------------------------------------------------------

#: The ports of the runs below, broker included: a range of their own (376xx), away
#: from the session broker and from other test sessions' runs on this machine.
ENDING_PORTS = {
    "CAREBUS_BROKER_PORT": 37692,
    "CAREBUS_BROKER_CONTROLLER_PORT": 37693,
    "CAREBUS_MLLP_PORT": 37675,
    "CAREBUS_METRICS_LISTENER_PORT": 37664,
    "CAREBUS_METRICS_WORKER_PORT": 37665,
    "CAREBUS_WORKER_WEB_PORT": 37666,
    "CAREBUS_METRICS_DASHBOARD_PORT": 37688,
}
READY_LINE = "Ctrl-C stops everything"


class Ended:
    """A `carebus run` started in one of the ways a person runs it, to be ended that way."""

    def __init__(self, ending: str, cwd: Path, env: dict[str, str]) -> None:
        self.ending = ending
        self.output = cwd / f"output-{ending}.txt"
        self.master: int | None = None
        self.tee: subprocess.Popen[bytes] | None = None
        self._reading = threading.Event()
        self._reader: threading.Thread | None = None
        argv = [sys.executable, "-m", "carebus", "run", "--no-feed"]
        if ending in ("ctrl-c-terminal", "terminal-closed"):
            # On a terminal of its own: a pty whose slave is its controlling terminal.
            import pty
            import termios

            master, slave = pty.openpty()

            def controlling_terminal() -> None:
                os.setsid()
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                preexec_fn=controlling_terminal,  # noqa: PLW1509 - a test, before any thread
            )
            os.close(slave)
            self.master = master
            self._reader = threading.Thread(target=self._read_terminal, daemon=True)
            self._reading.set()
            self._reader.start()
        elif ending == "ctrl-c-pipe":
            # `carebus run 2>&1 | tee FILE` as one job: Ctrl-C signals both.
            self.tee = subprocess.Popen(
                ["tee", str(self.output)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                process_group=0,  # a job of its own, which the run joins
            )
            assert self.tee.stdin is not None
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=self.tee.stdin,
                stderr=subprocess.STDOUT,
                process_group=self.tee.pid,
            )
            self.tee.stdin.close()
        else:
            with self.output.open("wb") as out:
                self.proc = subprocess.Popen(
                    argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
                )

    def _read_terminal(self) -> None:
        assert self.master is not None
        with self.output.open("wb") as out:
            while self._reading.is_set():
                ready, _, _ = select.select([self.master], [], [], 0.1)
                if not ready:
                    continue
                try:
                    data = os.read(self.master, 4096)
                except OSError:  # EIO: every slave end closed
                    return
                if not data:
                    return
                out.write(data)
                out.flush()

    def text(self) -> str:
        try:
            return self.output.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while READY_LINE not in self.text():
            assert self.proc.poll() is None, f"run exited: {self.text()[-2000:]}"
            assert time.monotonic() < deadline, f"not ready in {timeout_s} s: {self.text()[-2000:]}"
            time.sleep(0.2)

    def end(self) -> None:
        if self.ending == "ctrl-c-terminal":
            assert self.master is not None
            os.write(self.master, b"\x03")
        elif self.ending == "terminal-closed":
            self._close_terminal()
        elif self.ending == "ctrl-c-pipe":
            assert self.tee is not None
            os.killpg(self.tee.pid, signal.SIGINT)
        elif self.ending == "sigterm":
            self.proc.send_signal(signal.SIGTERM)
        elif self.ending == "sigkill":
            self.proc.send_signal(signal.SIGKILL)

    def _close_terminal(self) -> None:
        self._reading.clear()
        if self._reader is not None:
            self._reader.join()
        if self.master is not None:
            os.close(self.master)  # the terminal hangs up: SIGHUP, then EIO on every write
            self.master = None

    def cleanup(self) -> None:
        for proc in (self.proc, self.tee):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(10.0)  # the rest of the output, up to end-of-file
        self._close_terminal()


@pytest.fixture(scope="module")
def region_here(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A directory the runs below share (so each starts where the one before ended), and
    their environment: a local broker of the directory's own (no cluster configured)."""
    cwd = tmp_path_factory.mktemp("region")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")}
    env.update({k: str(v) for k, v in ENDING_PORTS.items()})
    env.update(
        {
            "CAREBUS_BROKER_HOME": str(cwd / "broker"),
            "CAREBUS_BROKER_HEAP": "384m",
            "CAREBUS_TOPICS_PARTITIONS": "1",
            "CAREBUS_WORKER_DATA_DIR": str(cwd / "worker-data"),
        }
    )
    return cwd, env


ENDINGS = ["ctrl-c-terminal", "ctrl-c-pipe", "sigterm", "terminal-closed", "sigkill"]


@pytest.mark.integration
@pytest.mark.slow
class TestEveryEndingLeavesNothing:
    @pytest.mark.parametrize("ending", ENDINGS)
    def test_every_process_stops_cleanly_and_the_next_run_starts(
        self, ending: str, region_here: tuple[Path, dict[str, str]]
    ) -> None:
        """However a run ends, each of its processes (the broker too) stops cleanly within the
        stop bound, and the directory is left as a next run needs it: no pids, free ports."""
        cwd, env = region_here
        settings = load_settings(env)
        run_dir = cwd / ".carebus" / "run"
        listener_log = run_dir / "logs" / "listener.log"
        logged = listener_log.stat().st_size if listener_log.exists() else 0
        clean_marker = cwd / "broker" / "data" / ".kafka_cleanshutdown"
        broker_ports = {
            name: ("127.0.0.1", port) for name, port in ENDING_PORTS.items() if "BROKER" in name
        }
        held = busy_ports(ports_to_bind(settings)) + busy_ports(broker_ports)
        assert not held, f"held by a process outside this test: {held}"
        started = Ended(ending, cwd, env)
        try:
            ready_s = settings.broker.start_timeout_s + RunOptions().ready_timeout_s + 60
            started.wait_ready(ready_s)
            # It started cleanly where the previous ending's run had run.
            assert "earlier carebus run" not in started.text()
            pids = read_pids(run_dir / "pids")
            assert set(pids) == {"run", WARDEN, "broker", *CHILDREN}
            assert pids["run"].pid == started.proc.pid
            assert not clean_marker.exists()  # the broker removes it when it starts
            started.end()
            bound = whole_stop_s(settings, RunOptions())
            deadline = time.monotonic() + bound
            for name, process in pids.items():
                while is_running(process):
                    assert time.monotonic() < deadline, f"{name} still runs after {bound} s"
                    time.sleep(0.2)
            status = started.proc.wait(60)
        finally:
            started.cleanup()
        assert status == (-signal.SIGKILL if ending == "sigkill" else 0), started.text()
        assert not (run_dir / "pids").exists()
        # Cleanly: the listener finished its messages in flight, the broker shut down.
        assert "ingest stopped" in listener_log.read_bytes()[logged:].decode()
        assert clean_marker.exists()
        if ending == "sigkill":
            warden_log = (run_dir / "logs" / "warden.log").read_text()
            assert "broker    stopped" in warden_log
            assert "killed" not in warden_log
        elif ending in ("ctrl-c-terminal", "sigterm"):
            tail = started.text().split("stopping ...")[-1]
            assert all(f"{name:<9} stopped" in tail for name in CHILDREN), tail
        assert busy_ports(ports_to_bind(settings)) == []
        assert busy_ports(broker_ports) == []
