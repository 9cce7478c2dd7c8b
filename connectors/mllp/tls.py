"""The listeners' TLS context, from :class:`carebus.settings.MllpSettings` (or ``HttpSettings``)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

from carebus.errors import ConfigError


class TlsSettings(Protocol):
    """The TLS fields a listener's settings section has (``mllp``, ``http``)."""

    @property
    def tls_certfile(self) -> Path | None: ...

    @property
    def tls_keyfile(self) -> Path | None: ...

    @property
    def tls_client_cafile(self) -> Path | None: ...


def server_ssl_context(settings: TlsSettings, *, section: str = "mllp") -> ssl.SSLContext | None:
    """TLS (1.2 or later) when a certificate is configured; mutual TLS with a client CA.

    With ``tls_client_cafile`` set, a client must present a certificate signed by
    that CA, or the handshake fails. None means plain TCP. ``section`` names the
    settings section in error messages.
    """
    if settings.tls_certfile is None:
        if settings.tls_keyfile is not None or settings.tls_client_cafile is not None:
            raise ConfigError(
                f"{section}.tls_keyfile/tls_client_cafile need {section}.tls_certfile"
            )
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(
            str(settings.tls_certfile),
            str(settings.tls_keyfile) if settings.tls_keyfile else None,
        )
        if settings.tls_client_cafile is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(settings.tls_client_cafile))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the {section.upper()} TLS certificate or CA: {exc}"
        ) from exc
    return ctx
