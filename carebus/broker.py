"""The project's own single-node Apache Kafka broker (KRaft), for development and tests.

It runs only when no cluster is configured (``settings.kafka.bootstrap_servers`` is
empty). Everything it owns lives under ``settings.broker.home``::

    HOME/server.properties    written from the settings on every start
    HOME/log4j2.properties    the JVM's logging (warnings and start-up lines)
    HOME/data/                the KRaft log directory, formatted once
    HOME/broker.pid           the JVM's process id while it runs
    HOME/broker.log           the JVM's output (the previous run's is broker.log.1)

The jars (``org.apache.kafka:kafka_2.13`` plus a log4j2 SLF4J binding) are fetched
once with Maven into ``settings.broker.cache_dir``, keyed by version. Start waits
until a record produced to a private health topic can be read back.

Start and stop take a lock file in the home, so concurrent callers (two test
sessions, say) see one broker. Every failure is a one-line :class:`BrokerError`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from carebus.errors import BrokerError, KafkaUnavailable
from carebus.log import get_logger
from carebus.settings import BrokerSettings

log = get_logger(__name__)

#: A private topic used only to prove the broker takes and serves records.
HEALTH_TOPIC = "__carebus_health"

#: JVM flags from Kafka's ``kafka-run-class.sh`` (the heap comes from the settings).
JVM_FLAGS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)

LOG4J2_PROPERTIES = """\
status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""

_POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>carebus</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

# Processes this interpreter started, kept so they are reaped (and not reported as
# "still running" when garbage collected) if this interpreter also stops them.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class BrokerPaths:
    """Where a broker home keeps its files."""

    home: Path

    @classmethod
    def of(cls, settings: BrokerSettings) -> BrokerPaths:
        return cls(settings.home.expanduser().resolve())

    @property
    def properties(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def lock_file(self) -> Path:
        return self.home / ".lock"


@dataclass(frozen=True)
class BrokerStatus:
    """What ``status`` found. ``note`` explains anything unusual, or is empty."""

    running: bool
    address: str
    pid: int | None = None
    note: str = ""


@dataclass(frozen=True)
class StartResult:
    """What ``start`` did: ``started`` is False when the broker was already running."""

    pid: int
    address: str
    started: bool
    seconds: float


def address(settings: BrokerSettings) -> str:
    """The bootstrap address clients use for the local broker."""
    return f"{settings.host}:{settings.port}"


def jar_dir(settings: BrokerSettings) -> Path:
    """The classpath directory for this Kafka and log4j version."""
    base = settings.cache_dir.expanduser().resolve()
    return base / f"kafka_2.13-{settings.kafka_version}+log4j-{settings.log4j_version}" / "libs"


def server_properties(settings: BrokerSettings, data_dir: Path) -> str:
    """The ``server.properties`` of a single-node combined broker and controller."""
    host, port, cport = settings.host, settings.port, settings.controller_port
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{host}:{cport}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "num.network.threads": str(settings.network_threads),
        "num.io.threads": str(settings.io_threads),
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def new_cluster_id() -> str:
    """A random KRaft cluster id, as ``kafka-storage.sh random-uuid`` prints it."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def resolve_jars(settings: BrokerSettings) -> Path:
    """Download Kafka's jars with Maven into the cache, once; return the directory."""
    libs = jar_dir(settings)
    base = libs.parent
    marker = base / "complete"
    if marker.exists():
        return libs
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / ".lock"):
        if marker.exists():
            return libs
        mvn = shutil.which(settings.maven)
        if mvn is None:
            raise BrokerError(
                f"Maven ({settings.maven!r}) was not found; it is needed once to download "
                f"Apache Kafka {settings.kafka_version} into {base} "
                "(install Maven or set CAREBUS_BROKER_MAVEN)"
            )
        pom = base / "pom.xml"
        pom.write_text(
            _POM.format(kafka=settings.kafka_version, log4j=settings.log4j_version),
            encoding="utf-8",
        )
        staging = base / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        log.info("broker.jars.download", kafka_version=settings.kafka_version)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        try:
            proc = subprocess.run(
                cmd, check=False, capture_output=True, text=True, cwd=base, timeout=900
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError("Maven did not finish downloading Kafka in 15 minutes") from exc
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            gist = _gist((proc.stdout + proc.stderr).splitlines())
            raise BrokerError(
                f"Maven could not download Apache Kafka {settings.kafka_version}: {gist}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        marker.write_text(f"{settings.kafka_version} {settings.log4j_version}\n")
    return libs


def status(settings: BrokerSettings) -> BrokerStatus:
    """Whether the broker of this home runs; a stale PID file is removed."""
    paths = BrokerPaths.of(settings)
    addr = address(settings)
    if not paths.pid_file.exists():
        return BrokerStatus(False, addr, note=_port_note(settings))
    with _locked(paths.lock_file, wait=False) as locked:
        pid, stale = _live_pid(paths, clean=locked)
    if pid is None:
        note = "stale PID file removed" if stale and locked else ""
        return BrokerStatus(False, addr, note=note or _port_note(settings))
    if not _port_open(settings.host, settings.port):
        return BrokerStatus(False, addr, pid, "process alive but not answering (starting?)")
    return BrokerStatus(True, addr, pid)


def start(settings: BrokerSettings, *, reset: bool = False) -> StartResult:
    """Start the broker and wait until it serves a round trip; a no-op if it runs.

    ``reset`` wipes the data directory first (only when the broker is stopped).
    """
    t0 = time.monotonic()
    paths = BrokerPaths.of(settings)
    paths.home.mkdir(parents=True, exist_ok=True)
    addr = address(settings)
    with _locked(paths.lock_file):
        pid, _ = _live_pid(paths, clean=True)
        if pid is not None:
            if reset:
                raise BrokerError(f"the broker at {addr} is running (pid {pid}); stop it first")
            if not _port_open(settings.host, settings.port):
                _wait_ready(settings, paths, pid, t0)
            return StartResult(pid, addr, False, time.monotonic() - t0)
        java = shutil.which(settings.java)
        if java is None:
            raise BrokerError(
                f"Java ({settings.java!r}) was not found; the local Kafka broker needs "
                "a Java 17+ runtime (install one or set CAREBUS_BROKER_JAVA)"
            )
        _check_port_free(settings.host, settings.port, "CAREBUS_BROKER_PORT")
        _check_port_free(settings.host, settings.controller_port, "CAREBUS_BROKER_CONTROLLER_PORT")
        libs = resolve_jars(settings)
        if reset:
            shutil.rmtree(paths.data, ignore_errors=True)
        paths.properties.write_text(server_properties(settings, paths.data), encoding="utf-8")
        paths.log4j.write_text(LOG4J2_PROPERTIES, encoding="utf-8")
        _format_once(paths, java, libs)
        pid = _spawn(settings, paths, java, libs)
        paths.pid_file.write_text(f"{pid}\n", encoding="ascii")
        log.info("broker.spawned", pid=pid, address=addr)
        try:
            _wait_ready(settings, paths, pid, t0)
        except BaseException:  # not ready, or interrupted: leave nothing half-started
            _terminate(pid, settings.stop_timeout_s)
            paths.pid_file.unlink(missing_ok=True)
            raise
        seconds = time.monotonic() - t0
        log.info("broker.started", pid=pid, address=addr, seconds=round(seconds, 1))
        return StartResult(pid, addr, True, seconds)


def stop(settings: BrokerSettings) -> int | None:
    """Stop the broker (SIGTERM, then SIGKILL after the timeout); its pid, or None."""
    paths = BrokerPaths.of(settings)
    if not paths.home.exists():
        return None
    with _locked(paths.lock_file):
        pid, _ = _live_pid(paths, clean=True)
        if pid is None:
            return None
        _terminate(pid, settings.stop_timeout_s)
        paths.pid_file.unlink(missing_ok=True)
        log.info("broker.stopped", pid=pid)
        return pid


def round_trip(bootstrap_servers: str, timeout_s: float = 10.0) -> None:
    """Produce a record to the health topic and read it back, or raise KafkaUnavailable."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    ms = int(timeout_s * 1000)
    common = {
        "bootstrap_servers": bootstrap_servers,
        "client_id": "carebus-broker-health",
        "request_timeout_ms": max(ms, 5000),
        "bootstrap_timeout_ms": ms,
    }
    deadline = time.monotonic() + timeout_s
    nonce = uuid.uuid4().bytes
    try:
        admin = KafkaAdminClient(**common)
        try:
            admin.create_topics(
                {HEALTH_TOPIC: {"num_partitions": 1, "replication_factor": 1}},
                wait_for_metadata=True,
            )
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()
        producer = KafkaProducer(acks="all", max_block_ms=ms, **common)
        try:
            sent = producer.send(HEALTH_TOPIC, value=nonce, partition=0).get(timeout=timeout_s)
        finally:
            producer.close(timeout=2)
        consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, **common)
        try:
            tp = TopicPartition(HEALTH_TOPIC, 0)
            consumer.assign([tp])
            consumer.seek(tp, sent.offset)
            while time.monotonic() < deadline:
                batch = consumer.poll(timeout_ms=500)
                if any(r.value == nonce for rs in batch.values() for r in rs):
                    return
        finally:
            consumer.close()
    except KafkaError as exc:
        raise KafkaUnavailable(
            f"no round trip through {bootstrap_servers}: {type(exc).__name__}"
        ) from exc
    raise KafkaUnavailable(f"no round trip through {bootstrap_servers}: record not read back")


# -- internals ---------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``path``; yields False if ``wait`` is off and it is busy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _live_pid(paths: BrokerPaths, *, clean: bool) -> tuple[int | None, bool]:
    """The pid in the PID file if that process is this home's broker; and whether stale."""
    try:
        text = paths.pid_file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None, False
    pid = int(text) if text.isdigit() else None
    if pid is not None and _alive(pid) and _is_our_broker(pid, paths):
        return pid, False
    if clean:
        paths.pid_file.unlink(missing_ok=True)
    return None, True


def _alive(pid: int) -> bool:
    """True until every thread of ``pid`` has exited (and so its sockets are closed)."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        _children.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[:1]
        if state != ["Z"]:
            return True
        # A zombie leader whose other threads are still tearing down is not gone yet.
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return True


def _is_our_broker(pid: int, paths: BrokerPaths) -> bool:
    """Guard against a recycled pid: the process must run this home's properties."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if not cmdline:  # an exiting process has no command line left; its name stays
            return Path(f"/proc/{pid}/comm").read_text().strip() == "java"
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc here: trust the PID file
    return str(paths.properties).encode() in cmdline


def _port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _port_note(settings: BrokerSettings) -> str:
    if _port_open(settings.host, settings.port):
        return f"port {settings.port} is answering, but not for this broker home"
    return ""


def _check_port_free(host: str, port: int, setting: str, grace_s: float = 3.0) -> None:
    """Raise unless ``port`` can be bound; a port a dead process held frees within a moment."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            with socket.create_server((host, port)):
                return
        except OSError as exc:
            if time.monotonic() < deadline and not _port_open(host, port):
                time.sleep(0.2)
                continue
            raise BrokerError(
                f"cannot use {host}:{port} for the local broker: {exc.strerror or exc} "
                f"(another process holds it; stop it or set {setting})"
            ) from exc


def _format_once(paths: BrokerPaths, java: str, libs: Path) -> None:
    if (paths.data / "meta.properties").exists():
        return
    cmd = [
        java,
        "-Xmx256m",
        f"-Dlog4j2.configurationFile={paths.log4j}",
        "-cp",
        f"{libs}/*",
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        "-t",
        new_cluster_id(),
        "-c",
        str(paths.properties),
    ]
    try:
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=120, cwd=paths.home
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError("formatting the broker data directory took over 2 minutes") from exc
    if proc.returncode != 0:
        gist = _gist((proc.stdout + proc.stderr).splitlines())
        raise BrokerError(f"cannot format the broker data directory {paths.data}: {gist}")


def _spawn(settings: BrokerSettings, paths: BrokerPaths, java: str, libs: Path) -> int:
    if paths.log_file.exists() and paths.log_file.stat().st_size:
        paths.log_file.replace(paths.log_file.with_name("broker.log.1"))
    cmd = [
        java,
        f"-Xmx{settings.heap}",
        *JVM_FLAGS,
        f"-Dlog4j2.configurationFile={paths.log4j}",
        "-cp",
        f"{libs}/*",
        "kafka.Kafka",
        str(paths.properties),
    ]
    with paths.log_file.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=paths.home,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    return proc.pid


def _wait_ready(settings: BrokerSettings, paths: BrokerPaths, pid: int, t0: float) -> None:
    deadline = t0 + settings.start_timeout_s
    last = "port not open"
    while True:
        if not _alive(pid):
            gist = _gist(_tail(paths.log_file))
            raise BrokerError(f"the broker exited during start-up: {gist} (see {paths.log_file})")
        if _port_open(settings.host, settings.port):
            remaining = deadline - time.monotonic()
            try:
                round_trip(address(settings), timeout_s=max(2.0, min(10.0, remaining)))
                return
            except KafkaUnavailable as exc:
                last = str(exc)
        if time.monotonic() >= deadline:
            gist = _gist(_tail(paths.log_file), default=last)
            raise BrokerError(
                f"the broker was not ready within {settings.start_timeout_s:g}s: {gist} "
                f"(see {paths.log_file})"
            )
        time.sleep(0.25)


def _terminate(pid: int, timeout_s: float) -> None:
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                _children.pop(pid, None)
                return
            time.sleep(0.1)
    if _alive(pid):
        raise BrokerError(f"the broker (pid {pid}) did not exit after SIGKILL")
    _children.pop(pid, None)


def _tail(path: Path, lines: int = 200) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 65536))
            return handle.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        return []


def _gist(lines: list[str], default: str = "no output") -> str:
    """The most telling line of some output: the last error, else the last line."""
    lines = [line.strip() for line in lines if line.strip()]
    for line in reversed(lines):
        if any(word in line for word in ("ERROR", "FATAL", "Exception", "Error:")):
            return line[:300]
    return lines[-1][:300] if lines else default
