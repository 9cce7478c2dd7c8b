"""Kafka client configuration built from :class:`carebus.settings.Settings`.

One place turns settings into keyword arguments for kafka-python (admin, simple
producers and consumers used by commands and tests) and aiokafka (the listener and
the Faust worker), so security settings are never spelled twice.
"""

from __future__ import annotations

import ssl
from typing import Any

from carebus.settings import Settings


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    k = settings.kafka
    if "SSL" not in k.security_protocol.upper():
        return None
    ctx = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
    if k.ssl_certfile:
        ctx.load_cert_chain(str(k.ssl_certfile), str(k.ssl_keyfile) if k.ssl_keyfile else None)
    return ctx


def common_config(settings: Settings) -> dict[str, Any]:
    """Settings shared by kafka-python and aiokafka clients."""
    k = settings.kafka
    cfg: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": k.client_id,
        "security_protocol": k.security_protocol,
        "request_timeout_ms": int(k.request_timeout_s * 1000),
    }
    ctx = _ssl_context(settings)
    if ctx is not None:
        cfg["ssl_context"] = ctx
    if k.sasl_mechanism:
        cfg["sasl_mechanism"] = k.sasl_mechanism
        cfg["sasl_plain_username"] = k.sasl_username
        cfg["sasl_plain_password"] = k.sasl_password
    return cfg


def kafka_python_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaAdminClient/Producer/Consumer."""
    return common_config(settings)


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's AIOKafkaProducer/AIOKafkaConsumer."""
    return common_config(settings)
