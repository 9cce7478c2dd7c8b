"""Fixtures for the ingest tests: per-test topics on the real broker, and a reader."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from carebus import broker
from carebus.settings import BrokerSettings, Settings
from carebus.topics import TopicNames
from tests.connectors.ingest_helpers import TopicReader, create_ingest_topics
from tests.connectors.tls_helpers import Pki, make_pki


@pytest.fixture
def ingest_settings(kafka_isolated: Settings) -> Settings:
    """Settings with a unique topic prefix whose raw, events and dead-letter topics exist."""
    create_ingest_topics(kafka_isolated)
    return kafka_isolated


@pytest.fixture
def topics(ingest_settings: Settings) -> TopicNames:
    return TopicNames.from_settings(ingest_settings.topics)


@pytest.fixture
def reader(ingest_settings: Settings) -> Iterator[TopicReader]:
    r = TopicReader(ingest_settings)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A test CA with server and client certificates (see ``tls_helpers``)."""
    return make_pki(tmp_path)


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
