"""Kafka client configuration built from :class:`carebus.settings.Settings`.

One place turns settings into keyword arguments for kafka-python (admin, simple
producers and consumers used by commands and tests) and aiokafka (the listener and
the Faust worker), so security settings are never spelled twice.

Supported ``kafka.security_protocol`` values (docs/security.md):

* ``SASL_SSL``: TLS to the brokers (checked against ``ssl_cafile``, host names
  checked unless ``ssl_check_hostname`` is false) and a SASL login,
  ``SCRAM-SHA-512`` (or ``-256``, or ``PLAIN``) as ``sasl_username`` with the password
  from ``sasl_password_file`` (a mounted Secret) or ``sasl_password``;
* ``SSL``: TLS; with ``ssl_certfile`` and ``ssl_keyfile`` a client certificate, so
  the broker authenticates carebus by it (mutual TLS, the principal is the
  certificate's subject);
* ``SASL_PLAINTEXT`` and ``PLAINTEXT``: for a development machine only.

Incomplete security settings (SASL without a mechanism, user or password; a
certificate without its key; a file that cannot be read) raise a one-line
:class:`~carebus.errors.ConfigError` here, before any connection is tried.
"""

from __future__ import annotations

import ssl
from typing import Any

from carebus.errors import ConfigError
from carebus.settings import KafkaSettings, Settings


def _ssl_context(k: KafkaSettings) -> ssl.SSLContext | None:
    if "SSL" not in k.security_protocol.upper():
        return None
    if bool(k.ssl_certfile) != bool(k.ssl_keyfile):
        raise ConfigError("kafka.ssl_certfile and kafka.ssl_keyfile must be set together")
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(k, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"kafka.{name} {path} is not a readable file")
    try:
        ctx = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
        if k.ssl_certfile and k.ssl_keyfile:
            ctx.load_cert_chain(str(k.ssl_certfile), str(k.ssl_keyfile))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the Kafka TLS files: {_reason(exc)}") from exc
    ctx.check_hostname = k.ssl_check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or type(exc).__name__)
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"


def sasl_password(k: KafkaSettings) -> str | None:
    """The SASL password: ``sasl_password_file``'s first line, else ``sasl_password``."""
    if k.sasl_password_file is None:
        return k.sasl_password
    try:
        text = k.sasl_password_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read kafka.sasl_password_file {k.sasl_password_file}: {exc.strerror}"
        ) from exc
    password = text.splitlines()[0].strip() if text.strip() else ""
    if not password:
        raise ConfigError(f"kafka.sasl_password_file {k.sasl_password_file} is empty")
    return password


def _sasl(k: KafkaSettings) -> dict[str, Any]:
    uses_sasl = k.security_protocol.upper().startswith("SASL_")
    if not uses_sasl:
        if k.sasl_mechanism:
            raise ConfigError(
                f"kafka.sasl_mechanism is set but kafka.security_protocol is "
                f"{k.security_protocol}; use SASL_SSL"
            )
        return {}
    if not k.sasl_mechanism:
        raise ConfigError(
            f"kafka.security_protocol {k.security_protocol} needs kafka.sasl_mechanism "
            "(SCRAM-SHA-512 recommended)"
        )
    password = sasl_password(k)
    if not k.sasl_username or not password:
        raise ConfigError(
            f"kafka.sasl_mechanism {k.sasl_mechanism} needs kafka.sasl_username and "
            "kafka.sasl_password_file (or kafka.sasl_password)"
        )
    return {
        "sasl_mechanism": k.sasl_mechanism,
        "sasl_plain_username": k.sasl_username,
        "sasl_plain_password": password,
    }


def common_config(settings: Settings) -> dict[str, Any]:
    """Settings shared by kafka-python and aiokafka clients."""
    k = settings.kafka
    cfg: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": k.client_id,
        "security_protocol": k.security_protocol,
        "request_timeout_ms": int(k.request_timeout_s * 1000),
    }
    ctx = _ssl_context(k)
    if ctx is not None:
        cfg["ssl_context"] = ctx
    cfg.update(_sasl(k))
    return cfg


def kafka_python_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaAdminClient/Producer/Consumer."""
    return common_config(settings)


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's AIOKafkaProducer/AIOKafkaConsumer."""
    return common_config(settings)
