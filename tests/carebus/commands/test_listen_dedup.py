"""Tests for duplicate detection as an operator runs `carebus listen`: across a SIGKILL,
across listener processes, and for a control id reused with other content."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from typing import IO

import pytest

from carebus.settings import Settings
from connectors.dedup import content_digest
from connectors.pipeline import CONFLICT_HEADER
from tests.carebus.commands.test_listen import (
    _descendants,
    _free_port,
    _free_ports,
    _send_from,
    _wait_for_port,
    _wait_gone,
)
from tests.connectors.ingest_helpers import TopicReader, adt, create_ingest_topics

pytestmark = pytest.mark.integration


def _env(settings: Settings, mllp_port: int, processes: int) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CAREBUS_")} | {
        "CAREBUS_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        # the test broker is the local development broker (for the durability check)
        "CAREBUS_BROKER_PORT": str(settings.broker.port),
        "CAREBUS_TOPICS_PREFIX": settings.topics.prefix,
        "CAREBUS_MLLP_PORT": str(mllp_port),
        "CAREBUS_MLLP_PROCESSES": str(processes),
        "CAREBUS_METRICS_LISTENER_PORT": str(_free_ports(processes + 1)),
        "CAREBUS_LOG_FORMAT": "json",
    }


#: Each listener's output, in a file rather than a pipe (a pipe nobody reads while
#: the test runs would block a chatty listener once it is full).
_OUTPUT: dict[int, IO[bytes]] = {}


def _start(settings: Settings, mllp_port: int, processes: int = 1) -> subprocess.Popen[bytes]:
    output = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _output)
    proc = subprocess.Popen(
        [sys.executable, "-m", "carebus", "listen"],
        env=_env(settings, mllp_port, processes),
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    _OUTPUT[proc.pid] = output
    try:
        _wait_for_port(mllp_port, proc, timeout_s=90)
    except BaseException:
        _kill(proc)
        raise
    return proc


def _output(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> bytes:
    """What ``proc`` wrote, once it has exited (empty when it was read already)."""
    proc.wait(timeout_s)
    output = _OUTPUT.pop(proc.pid, None)
    if output is None:
        return b""
    with output:
        output.seek(0)
        return output.read()


def _kill(proc: subprocess.Popen[bytes]) -> bytes:
    if proc.poll() is None:
        proc.kill()
    return _output(proc)


def _restamped(raw: bytes) -> bytes:
    """``raw`` as an engine resends it: a new MSH-7."""
    return raw.replace(b"|20260301093000||", b"|20260301094512||", 1)


def _lims(control_id: str) -> bytes:
    return adt(control_id).replace(b"MSH|^~\\&|PAS|", b"MSH|^~\\&|LIMS|", 1)


class TestResendAcrossSigkill:
    def test_a_message_acknowledged_before_sigkill_is_a_duplicate_after_restart(
        self, kafka_isolated: Settings
    ) -> None:
        """AA, SIGKILL, a new listener, the resend (restamped MSH-7): AA again and still
        exactly one raw record; the events published again carry the same ids."""
        topics = create_ingest_topics(kafka_isolated)
        port = _free_port()
        raw = adt("SK1")
        first = _start(kafka_isolated, port)
        try:
            assert b"MSA|AA|SK1" in _send_from("127.0.0.1", port, raw)
        finally:
            _kill(first)
        assert first.returncode == -signal.SIGKILL
        second = _start(kafka_isolated, port)
        try:
            assert b"MSA|AA|SK1" in _send_from("127.0.0.1", port, _restamped(raw))
            assert b"MSA|AA|SK1" in _send_from("127.0.0.1", port, _restamped(raw))
            second.send_signal(signal.SIGTERM)
            output = _output(second, 30)
        finally:
            _kill(second)
        assert b"duplicate window rebuilt" in output
        for identifier in (b"PATIENT", b"9434765919", b"M123", b"19700101"):
            assert identifier not in output
        reader = TopicReader(kafka_isolated)
        try:
            [stored] = reader.read(topics.raw)
            assert stored.value == raw
            ids = {r["header"]["event_id"] for _, r in reader.events(topics.events)}  # type: ignore[index]
            assert len(ids) == 1  # a second copy at most, never a different event
        finally:
            reader.close()

    def test_several_processes_rebuild_from_every_childs_records(
        self, kafka_isolated: Settings
    ) -> None:
        """With two listener processes, messages stored through either child before a
        SIGKILL of the parent are duplicates after the restart, from any address."""
        topics = create_ingest_topics(kafka_isolated)
        port = _free_port()
        hosts = [f"127.0.0.{n}" for n in range(2, 6)]
        messages = [adt(f"SKP{n}") for n in range(len(hosts))]
        first = _start(kafka_isolated, port, processes=2)
        children = _descendants(first.pid)
        try:
            for host, raw in zip(hosts, messages, strict=True):
                assert b"MSA|AA|SKP" in _send_from(host, port, raw)
        finally:
            _kill(first)
            assert _wait_gone(children, 30) == set()
        second = _start(kafka_isolated, port, processes=2)
        try:
            for host, raw in zip(reversed(hosts), messages, strict=True):  # other addresses
                assert b"MSA|AA|SKP" in _send_from(host, port, _restamped(raw))
        finally:
            kids = _descendants(second.pid)
            second.send_signal(signal.SIGTERM)
            _output(second, 60)
            _wait_gone(kids, 30)
        reader = TopicReader(kafka_isolated)
        try:
            assert reader.end_offsets(topics.raw) == len(messages)
        finally:
            reader.close()


class TestControlIdConflict:
    def test_same_ids_different_content_are_both_stored_and_acknowledged(
        self, kafka_isolated: Settings
    ) -> None:
        """PAS and LIMS of one facility reusing MSH-10: both AA, two raw records, the second
        marked with the first one's digest; each one's resend is a duplicate."""
        topics = create_ingest_topics(kafka_isolated)
        port = _free_port()
        pas, lims = adt("CC1"), _lims("CC1")
        proc = _start(kafka_isolated, port)
        try:
            for raw in (pas, lims, _restamped(pas), _restamped(lims)):
                assert b"MSA|AA|CC1" in _send_from("127.0.0.1", port, raw)
            proc.send_signal(signal.SIGTERM)
            output = _output(proc, 30)
        finally:
            _kill(proc)
        assert b"control id reused with different content" in output
        for identifier in (b"PATIENT", b"9434765919", b"M123", b"19700101"):
            assert identifier not in output
        reader = TopicReader(kafka_isolated)
        try:
            first, second = reader.read(topics.raw)
            assert (first.value, second.value) == (pas, lims)
            assert CONFLICT_HEADER not in first.headers
            assert second.headers[CONFLICT_HEADER] == content_digest(pas).encode()
            assert reader.event_count(topics.events) == 2
        finally:
            reader.close()
