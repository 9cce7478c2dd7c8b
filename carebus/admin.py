"""Kafka's admin API (kafka-python's ``KafkaAdminClient``), errors translated.

kafka-python exceptions never leave this module's callers untranslated: network
trouble and timeouts become :class:`KafkaUnavailable` (retriable); refusals such
as a failed authorization or an impossible replication factor become
:class:`ConfigError`, since only a change of settings or declarations helps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from carebus.errors import CarebusError, ConfigError, KafkaUnavailable
from carebus.kafka import kafka_python_config
from carebus.settings import Settings


@dataclass(frozen=True)
class ClusterInfo:
    """What the cluster says about itself."""

    cluster_id: str
    controller_id: int
    brokers: tuple[str, ...]


def translate(exc: Exception, doing: str) -> CarebusError:
    """The carebus error for a kafka-python exception raised while ``doing`` something."""
    from kafka.errors import AuthorizationError, SaslAuthenticationFailedError

    name = type(exc).__name__
    if isinstance(exc, (AuthorizationError, SaslAuthenticationFailedError)):
        return ConfigError(f"cannot {doing}: {name} (check the Kafka security settings)")
    if getattr(exc, "retriable", False) or isinstance(exc, OSError):
        return KafkaUnavailable(f"cannot {doing}: {name}")
    detail = str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else name
    return ConfigError(f"cannot {doing}: {name}" + (f" ({detail})" if detail != name else ""))


@contextlib.contextmanager
def admin_client(settings: Settings) -> Iterator[Any]:
    """A connected ``KafkaAdminClient``; kafka-python errors inside are translated."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    cfg = kafka_python_config(settings)
    cfg.setdefault("bootstrap_timeout_ms", cfg["request_timeout_ms"])
    servers = settings.bootstrap_servers
    try:
        client = KafkaAdminClient(**cfg)
    except (KafkaError, OSError) as exc:
        raise translate(exc, f"connect to Kafka at {servers}") from exc
    try:
        yield client
    except (KafkaError, OSError) as exc:
        raise translate(exc, f"complete an admin request at {servers}") from exc
    finally:
        client.close()


def describe_cluster(settings: Settings) -> ClusterInfo:
    """Ask the cluster for its id, controller and brokers."""
    with admin_client(settings) as admin:
        raw = admin.describe_cluster()
    brokers = tuple(f"{b['host']}:{b['port']}" for b in raw.get("brokers", []))
    return ClusterInfo(str(raw.get("cluster_id")), int(raw.get("controller_id", -1)), brokers)
