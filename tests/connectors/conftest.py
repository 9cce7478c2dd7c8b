"""Fixtures for the ingest tests: per-test topics on the real broker, and a reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from carebus.settings import Settings
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
