"""Shared fixtures, above all ``kafka``: a real broker for integration tests.

``kafka`` (session scope) yields a :class:`carebus.settings.Settings` whose
bootstrap servers reach a real Kafka broker:

* when ``CAREBUS_KAFKA_BOOTSTRAP_SERVERS`` is set, that cluster (the other
  ``CAREBUS_KAFKA_*`` variables, such as security settings, apply too);
* otherwise the project's own broker (``carebus.broker``), home
  ``.carebus/test-broker-PORT`` on 127.0.0.1:29092 with its controller on 29093,
  so a developer's broker on the default ports is left alone
  (``TEST_BROKER_PORT`` moves both). It is started with fresh data when not
  running and reused when it is. Sessions using it hold a lease; the last one
  out stops it if a test session started it.

``throwaway_broker`` is a broker of one test's own (home, ports), not started, that
the test may stop and start again (an outage, a restart).

A broker that cannot be started is a test error, never a skip; under ``CI=true``
the integration tests cannot be deselected either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from carebus import broker, compiled
from carebus.settings import BrokerSettings, Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_BROKER_PORT = 29092


def broker_for_tests() -> BrokerSettings:
    """The local broker used by test sessions (not the developer's own)."""
    port = int(os.environ.get("TEST_BROKER_PORT", TEST_BROKER_PORT))
    home = REPO_ROOT / ".carebus" / f"test-broker-{port}"
    return BrokerSettings(home=home, port=port, controller_port=port + 1)


@contextlib.contextmanager
def _fixture_lock(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".fixture-lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _leased_broker(settings: BrokerSettings) -> Iterator[None]:
    """Hold the test broker for this session; start it if needed, stop it if last out."""
    home = broker.BrokerPaths.of(settings).home
    leases = home / "leases"
    marker = home / "started-by-tests"
    lease = leases / str(os.getpid())
    with _fixture_lock(home):
        fresh = not broker.status(settings).running
        result = broker.start(settings, reset=fresh)
        if result.started:
            marker.touch()
        leases.mkdir(exist_ok=True)
        lease.touch()
    try:
        yield
    finally:
        with _fixture_lock(home):
            lease.unlink(missing_ok=True)
            others = [p for p in leases.iterdir() if p.name.isdigit()]
            live = [p for p in others if _pid_alive(int(p.name))]
            for dead in set(others) - set(live):
                dead.unlink(missing_ok=True)
            if not live and marker.exists():
                broker.stop(settings)
                marker.unlink()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo any logging set-up a test did (``carebus.cli.main`` configures logging
    against the stderr pytest captures, which is closed once the test ends)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def pytest_configure(config: pytest.Config) -> None:
    """Under CI=true the integration tests must run: refuse to deselect them.

    Refuse, too, to test compiled modules older than their source: the extension
    would shadow the edit (``make test`` rebuilds them first).
    """
    markexpr = str(getattr(config.option, "markexpr", "") or "")
    if os.environ.get("CI", "").lower() == "true" and "not integration" in markexpr:
        raise pytest.UsageError("CI=true: integration tests may not be deselected")
    stale = compiled.stale()
    if stale:
        raise pytest.UsageError(
            f"compiled modules older than their source: {', '.join(stale)}; "
            "rebuild them with `make test` (or `make lint`)"
        )


@pytest.fixture(scope="session")
def kafka() -> Iterator[Settings]:
    """Settings pointing at a real Kafka broker (see the module docstring)."""
    if os.environ.get("CAREBUS_KAFKA_BOOTSTRAP_SERVERS"):
        env = {k: v for k, v in os.environ.items() if k.startswith("CAREBUS_KAFKA_")}
        yield load_settings(env)
        return
    settings = broker_for_tests()
    with _leased_broker(settings):
        yield Settings(broker=settings)


_HEX_AS_LETTERS = str.maketrans("0123456789", "ghijklmnop")


@pytest.fixture
def unique_topic_prefix() -> str:
    """A topic prefix no other test (or test session) uses.

    Letters only: output that names a topic is checked for NHS-number-shaped digits.
    """
    return "test-" + uuid.uuid4().hex[:12].translate(_HEX_AS_LETTERS)


@pytest.fixture
def kafka_isolated(kafka: Settings, unique_topic_prefix: str) -> Settings:
    """The ``kafka`` settings with a unique topic prefix and small topics (2 partitions)."""
    topics = dataclasses.replace(kafka.topics, prefix=unique_topic_prefix, partitions=2)
    return kafka.replace(topics=topics)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def throwaway_broker(tmp_path: Path) -> Iterator[BrokerSettings]:
    """A broker of the test's own (home, ports) that it may stop and restart; not started."""
    settings = BrokerSettings(
        home=tmp_path / "broker",
        port=_free_port(),
        controller_port=_free_port(),
        heap="384m",
        start_timeout_s=60.0,
        stop_timeout_s=15.0,
    )
    try:
        yield settings
    finally:
        broker.stop(settings)
