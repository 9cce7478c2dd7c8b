"""How carebus's HTTP surfaces authenticate callers: a bearer token read from a file.

One mechanism for every surface that can show data: the worker's alert lookup
(``worker.web_token_file``) and the HTTP ingest endpoint (``http.token_file``).
(The dashboard, health and metrics pages hold counts only, never patient data;
they are protected by TLS and the bind rules of :mod:`carebus.exposure`.) A caller sends
``Authorization: Bearer <token>``; the token is the first line of the file, compared
with :func:`hmac.compare_digest`, and never logged. An unauthenticated request gets
``401`` with a ``WWW-Authenticate: Bearer`` header and a body that names the error
only.

Transport security is separate: :func:`server_ssl_context` builds the TLS context of
the surfaces that are not connectors (health and metrics, dashboard, worker web),
and :mod:`carebus.exposure` refuses a non-loopback bind without it.

    auth = TokenAuth.from_file(settings.worker.web_token_file, "worker.web_token_file")
    if not auth.allows(request.headers.get("Authorization")):
        return unauthorized()
"""

from __future__ import annotations

import hmac
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from carebus.errors import ConfigError

#: The header value of a 401: the scheme carebus accepts.
CHALLENGE = 'Bearer realm="carebus"'


class TokenAuth:
    """Checks ``Authorization: Bearer`` headers against one token (None: refuse all)."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode("utf-8") if token else None

    def __repr__(self) -> str:  # never show the token
        return f"TokenAuth(configured={self.configured})"

    @property
    def configured(self) -> bool:
        """True when a token was given: without one, every request is refused."""
        return self._token is not None

    @classmethod
    def from_file(cls, path: Path | None, setting: str) -> TokenAuth:
        """The token in ``path`` (its first line); no file configured: refuse all.

        ``ConfigError`` (naming ``setting``, never the token) when the file cannot be
        read or holds no token.
        """
        if path is None:
            return cls(None)
        return cls(read_token(path, setting))

    def allows(self, authorization: str | None) -> bool:
        """True when ``authorization`` is ``Bearer <the token>``."""
        if self._token is None or not authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode("utf-8"), self._token)

    def middleware(
        self, protected: Callable[[str], bool]
    ) -> Callable[..., Awaitable[web.StreamResponse]]:
        """An aiohttp middleware answering 401 for a ``protected(path)`` without the token."""

        @web.middleware
        async def require_token(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            if protected(request.path) and not self.allows(request.headers.get("Authorization")):
                return unauthorized()
            return await handler(request)

        return require_token


def read_token(path: Path, setting: str) -> str:
    """The first line of ``path``, stripped; ``ConfigError`` if unreadable or empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {setting} {path}") from exc
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError(f"{setting} {path} holds no token")
    return token


def unauthorized() -> web.Response:
    """401: the body names the error, nothing else."""
    return web.json_response(
        {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": CHALLENGE}
    )


def bearer_header(token: str) -> dict[str, str]:
    """The request header a client sends (``carebus alerts show``)."""
    return {"Authorization": f"Bearer {token}"}


def server_ssl_context(
    certfile: Path | None, keyfile: Path | None, *, section: str
) -> ssl.SSLContext | None:
    """TLS 1.2 or later with ``certfile``/``keyfile``; None (plain HTTP) without a certificate."""
    if certfile is None:
        if keyfile is not None:
            raise ConfigError(f"{section}: a TLS key file needs its certificate file")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{section}: cannot load the TLS certificate or key: {exc}") from exc
    return ctx
