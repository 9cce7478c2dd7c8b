"""Tests for carebus.admin: kafka-python errors become carebus errors."""

from __future__ import annotations

import pytest
from kafka import errors as kerrors

from carebus.admin import describe_cluster, translate
from carebus.errors import ConfigError, KafkaUnavailable
from carebus.settings import Settings


class TestTranslate:
    @pytest.mark.parametrize(
        "exc",
        [
            kerrors.KafkaTimeoutError("Unable to bootstrap"),
            kerrors.KafkaConnectionError("refused"),
            kerrors.NotControllerError(),
            ConnectionRefusedError(111, "refused"),
        ],
    )
    def test_network_trouble_is_retriable(self, exc: Exception) -> None:
        """Timeouts, lost connections and retriable broker errors become KafkaUnavailable."""
        error = translate(exc, "create topic t")
        assert isinstance(error, KafkaUnavailable)
        assert error.retriable is True
        assert "create topic t" in str(error)

    def test_authorization_failure_points_at_security_settings(self) -> None:
        """A refused authorization is a ConfigError that mentions the security settings."""
        error = translate(kerrors.TopicAuthorizationFailedError(), "create topic t")
        assert isinstance(error, ConfigError)
        assert "security settings" in str(error)

    def test_impossible_request_is_a_config_error(self) -> None:
        """A request the cluster can never grant is a non-retriable ConfigError."""
        error = translate(kerrors.InvalidReplicationFactorError("3 > 1 brokers"), "create t")
        assert isinstance(error, ConfigError)
        assert error.retriable is False
        assert "InvalidReplicationFactorError" in str(error)


@pytest.mark.integration
class TestDescribeCluster:
    def test_reports_the_brokers(self, kafka: Settings) -> None:
        """describe_cluster returns the cluster id and at least one broker address."""
        info = describe_cluster(kafka)
        assert info.cluster_id
        assert len(info.brokers) >= 1
        assert all(":" in b for b in info.brokers)
