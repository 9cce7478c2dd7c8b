"""No patient data reaches a log: a whole region, end to end, searched line by line.

A listener, a worker and a dashboard run as real processes on a broker of the
test's own. A synthetic feed goes in over MLLP, with malformed and hostile
messages that carry patients' identifiers (an unusable MSH-18, an unsupported
message type, broken framing, an oversize frame, bytes that are no HL7 at all),
and the broker is stopped and started again half-way, so that the libraries
under carebus (aiokafka, faust, mode, aiohttp) log their warnings and tracebacks
too. Then every line every process wrote is searched for every NHS number, local
identifier, name, date of birth and postcode of the feed's patients.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer

from carebus import broker
from carebus.settings import BrokerSettings
from carebus.status import end_offsets, group_lag

START, END = b"\x0b", b"\x1c\r"
GREY_HAIR_PID = (
    "PID|1||{nhs}^^^NHS^NH~{local}^^^RXA^MR||{family}^{given}||{dob}|F|||1 Road^^Town^^{postcode}"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Identifiers:
    """What identifies the feed's patients, as it could appear in a log line."""

    words: set[str] = field(default_factory=set)  # matched as whole words, any case

    def add(self, value: str) -> None:
        value = value.strip()
        if len(value) >= 3:
            self.words.add(value)

    def pattern(self) -> re.Pattern[str]:
        alternatives = sorted((re.escape(w) for w in self.words), key=len, reverse=True)
        return re.compile(
            r"(?<![A-Za-z0-9])(?:" + "|".join(alternatives) + r")(?![A-Za-z0-9])", re.I
        )


def identifiers_of(messages: list[bytes]) -> Identifiers:
    """NHS numbers and local ids (PID-3), names (PID-5), birth dates (PID-7) and postcodes."""
    found = Identifiers()
    for raw in messages:
        text = raw.decode("latin-1")
        separator = text[3] if text.startswith("MSH") else "|"
        for segment in re.split(r"[\r\n]+", text):
            fields = [*segment.split(separator), *[""] * 12]
            if fields[0] != "PID":
                continue
            for repetition in fields[3].split("~"):
                found.add(repetition.split("^")[0])
            for name in fields[5].split("~"):
                for component in name.split("^")[:3]:
                    found.add(component)
            dob = fields[7][:8]
            if len(dob) == 8:
                found.add(dob)
                found.add(f"{dob[:4]}-{dob[4:6]}-{dob[6:]}")
            for address in fields[11].split("~"):
                components = address.split("^")
                if len(components) > 4:
                    found.add(components[4])
                    found.add(components[4].replace(" ", ""))
    return found


def frames_of(feed: bytes) -> list[bytes]:
    return [f.lstrip(START) for f in feed.split(END) if f.strip()]


def hostile_frames(pid: str) -> list[bytes]:
    """Messages a broken or hostile peer sends, each carrying a patient's PID."""
    msh = "MSH|^~\\&|PAS|RXA|CAREBUS|REGION|20260301093000||{type}|{cid}|P|2.5.1{extra}\r"
    return [
        (msh.format(type="ADT^A01", cid="HOSTILE1", extra="|||||UNDEFINED") + pid).encode(),
        (msh.format(type="ZZZ^Z99", cid="HOSTILE2", extra="") + pid + "\r").encode(),
        (msh.format(type="ADT^A01", cid="HOSTILE3", extra="") + pid + "\r").encode("utf-16"),
        (pid + "\rnot an MSH at all\r").encode(),
        b"\x00\xff" * 50 + pid.encode(),
    ]


def send_frames(port: int, frames: list[bytes], *, raw: bytes = b"") -> None:
    """Send each frame and read what comes back (an ACK, or the connection closing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for payload in frames:
            sock.sendall(START + payload + END)
            sock.recv(65536)
        if raw:
            sock.sendall(raw)
            with contextlib.suppress(OSError):
                sock.recv(65536)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.25)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Region:
    """The processes of one region and where their logs go."""

    tmp: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def carebus(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
        with (self.tmp / "logs" / "commands.log").open("ab") as log:
            return subprocess.run(
                [sys.executable, "-m", "carebus", *args],
                env=self.env,
                cwd=self.tmp,
                stdout=log,
                stderr=log,
                timeout=timeout,
                check=True,
            )

    def start(self, name: str, *args: str) -> None:
        log = (self.tmp / "logs" / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "carebus", *args],
            env=self.env,
            cwd=self.tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def lines(self) -> Iterator[tuple[str, str]]:
        for path in sorted((self.tmp / "logs").iterdir()):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                yield path.name, line


@pytest.fixture
def region_broker(throwaway_broker: BrokerSettings) -> BrokerSettings:
    """A broker of this test's own, started, which the test stops and starts again."""
    broker.start(throwaway_broker, reset=True)
    return throwaway_broker


@pytest.fixture
def region(tmp_path: Path, region_broker: BrokerSettings) -> Iterator[Region]:
    (tmp_path / "logs").mkdir()
    prefix = "privacy-" + uuid.uuid4().hex[:8].translate(str.maketrans("0123456789", "ghijklmnop"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")}
    env.update(
        {
            "CAREBUS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{region_broker.port}",
            "CAREBUS_BROKER_PORT": str(region_broker.port),  # the local development broker
            "CAREBUS_TOPICS_PREFIX": prefix,
            "CAREBUS_TOPICS_PARTITIONS": "2",
            "CAREBUS_WORKER_APP_ID": f"{prefix}-worker",
            "CAREBUS_WORKER_TICK_INTERVAL_S": "1",
            "CAREBUS_WORKER_REGION_CONFIG": str(tmp_path / "region.yaml"),
            "CAREBUS_MLLP_PORT": str(free_port()),
            "CAREBUS_MLLP_MAX_FRAME_BYTES": "65536",
            "CAREBUS_METRICS_LISTENER_PORT": str(free_port()),
            "CAREBUS_WORKER_WEB_PORT": str(free_port()),
            "CAREBUS_METRICS_WORKER_PORT": str(free_port()),
            "CAREBUS_METRICS_DASHBOARD_PORT": str(free_port()),
            "CAREBUS_LOG_FORMAT": "json",
            "CAREBUS_LOG_LEVEL": "DEBUG",
        }
    )
    running = Region(tmp_path, env)
    try:
        yield running
    finally:
        running.stop()


def worker_caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """True once the worker's group has committed the end of every events partition."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        (events,) = end_offsets(consumer, [topic])
        lags = [g for g in group_lag(admin, [events]) if g.group == group]
    finally:
        admin.close()
        consumer.close()
    return len(lags) == len(events.end_offsets) > 0 and all(g.lag == 0 for g in lags)


class TestTheSearch:
    PID = GREY_HAIR_PID.format(
        nhs="9434765919", local="RXA7731", family="GREYHAIR", given="WINIFRED",
        dob="19381104", postcode="LS6 2QT",
    )  # fmt: skip

    @pytest.mark.parametrize(
        "line",
        [
            '{"event": "bad record", "detail": "PID 9434765919"}',
            '{"event": "x", "name": "Winifred Greyhair"}',
            '{"event": "x", "born": "1938-11-04"}',
            '{"event": "x", "address": "1 Road, Town, LS6 2QT"}',
            '{"event": "x", "mrn": "rxa7731"}',
        ],
    )
    def test_a_leak_is_found(self, line: str) -> None:
        """Each kind of identifier of a message's PID is found in a log line, in any case."""
        assert identifiers_of([self.PID.encode()]).pattern().search(line)

    def test_control_ids_and_codes_are_not_leaks(self) -> None:
        """What carebus does log (control ids, facility codes, reasons) is not mistaken for one."""
        line = '{"control_id": "HOSTILE2", "sending_facility": "RXA", "reason": "unparseable"}'
        assert not identifiers_of([self.PID.encode()]).pattern().search(line)


@pytest.mark.integration
class TestNoPatientDataInLogs:
    def test_a_whole_region_logs_no_patient_identifier(
        self, region: Region, region_broker: BrokerSettings, tmp_path: Path
    ) -> None:
        """Listener, worker and dashboard, fed good, malformed and hostile messages across a
        broker restart, write not one NHS number, local id, name, birth date or postcode."""
        feed_path = tmp_path / "feed.hl7"
        region.carebus(
            "generate", "--patients", "30", "--seed", "11", "--out", str(feed_path),
            "--region-out", str(tmp_path / "region.yaml"),
        )  # fmt: skip
        messages = frames_of(feed_path.read_bytes())
        half = len(messages) // 2
        (tmp_path / "first.hl7").write_bytes(b"".join(START + m + END for m in messages[:half]))
        (tmp_path / "second.hl7").write_bytes(b"".join(START + m + END for m in messages[half:]))
        env = region.env
        bootstrap = env["CAREBUS_KAFKA_BOOTSTRAP_SERVERS"]
        mllp_port = int(env["CAREBUS_MLLP_PORT"])
        region.carebus("topics", "apply")
        region.start("listener", "listen")
        region.start("worker", "worker")
        region.start("dashboard", "dashboard")
        wait_until(lambda: ready(int(env["CAREBUS_METRICS_LISTENER_PORT"])), "listener ready")
        replay = ("replay", "--port", str(mllp_port), "--rate", "400", "--retries", "20")

        region.carebus(*replay, str(tmp_path / "first.hl7"))
        patient = GREY_HAIR_PID.format(
            nhs="9434765919", local="RXA7731", family="GREYHAIR", given="WINIFRED",
            dob="19381104", postcode="LS6 2QT",
        )  # fmt: skip
        send_frames(mllp_port, hostile_frames(patient))
        oversize = START + (patient + "\r").encode() * 2000 + END
        send_frames(mllp_port, [], raw=oversize)
        send_frames(mllp_port, [], raw=b"junk before a frame " + patient.encode() + START)

        broker.stop(region_broker)
        broker.start(region_broker)
        region.carebus(*replay, str(tmp_path / "second.hl7"))
        topic = f"{env['CAREBUS_TOPICS_PREFIX']}.events"
        wait_until(
            lambda: worker_caught_up(bootstrap, env["CAREBUS_WORKER_APP_ID"], topic),
            "worker caught up",
        )
        region.stop()

        identifiers = identifiers_of([*messages, patient.encode()])
        assert {"9434765919", "RXA7731", "GREYHAIR", "19381104", "LS6 2QT"} <= identifiers.words
        pattern = identifiers.pattern()
        lines = list(region.lines())
        logged = {name for name, _ in lines}
        assert {"listener.log", "worker.log", "dashboard.log"} <= logged
        # The logs are about these messages: their control ids are there, in the clear.
        assert any("HOSTILE2" in line for _, line in lines)
        assert any("mllp framing error" in line for _, line in lines)
        leaks = [(name, pattern.sub("<HIT>", line)) for name, line in lines if pattern.search(line)]
        assert not leaks, leaks[:20]
