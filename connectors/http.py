"""The HTTP ingest endpoint: POST one HL7 v2 message, or a batch, and get JSON back.

``POST /v1/messages`` with the message(s) as the body: one message, several
(plain or MLLP-framed), or an FHS/BHS batch (:func:`connectors.hl7.iter_feed`).
The messages go through the :class:`~connectors.pipeline.Pipeline` in order, and
the answer comes only once each is durable (published, or dead-lettered):

* ``200`` every message accepted (or a duplicate of one already accepted);
* ``422`` at least one rejected: ``results`` gives each message's reason (the
  others were accepted; sending the batch again does not publish them twice);
* ``400`` empty body; ``413`` body over ``max_body_bytes``;
* ``503`` Kafka unavailable: nothing after the first failing message was
  published; send again later (``Retry-After``).

Bodies are JSON: ``{"accepted": n, "duplicates": n, "rejected": n, "results":
[{"position", "control_id", "status", "reason", "detail"}]}``. No message content
is ever echoed.

With ``http.tls_certfile`` the endpoint speaks HTTPS only (TLS 1.2 or later, the
MLLP listener's context, :func:`connectors.mllp.tls.server_ssl_context`); with
``http.tls_client_cafile`` too, a client must present a certificate from that CA,
and its subject CN and subjectAltNames identify it to the sender allow-list, as
for MLLP. With ``http.token_file`` every request needs ``Authorization: Bearer``
and that file's token (:mod:`carebus.webauth`, the mechanism of every carebus HTTP
surface); without it the answer is 401 and nothing is read.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from carebus.errors import KafkaUnavailable
from carebus.log import get_logger
from carebus.settings import HttpSettings
from carebus.webauth import TokenAuth
from connectors.hl7 import iter_feed
from connectors.mllp.allowlist import Peer
from connectors.mllp.tls import server_ssl_context
from connectors.pipeline import Sink

log = get_logger(__name__)

PATH = "/v1/messages"


def create_app(
    pipeline: Sink, *, max_body_bytes: int, auth: TokenAuth | None = None
) -> web.Application:
    """The aiohttp application (one route); with ``auth``, every request needs its token."""
    middlewares = [auth.middleware(lambda _path: True)] if auth is not None else []
    app = web.Application(client_max_size=max_body_bytes, middlewares=middlewares)

    async def receive(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_body_bytes:
            return _json(413, error="body-too-large", detail=f"limit is {max_body_bytes} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json(413, error="body-too-large", detail=f"limit is {max_body_bytes} bytes")
        if not body.strip():
            return _json(400, error="empty-body", detail="POST one HL7 v2 message or a batch")
        peer = _peer(request)
        results: list[dict[str, Any]] = []
        counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
        for item in iter_feed(body):
            try:
                outcome = await pipeline.submit(
                    item.raw, peer, datetime.now(UTC), origin=f"http#{item.position}"
                )
            except KafkaUnavailable as exc:
                log.warning("http batch interrupted", error=type(exc).__name__)
                return _json(
                    503,
                    headers={"Retry-After": "5"},
                    error="kafka-unavailable",
                    detail=f"message {item.position} and later ones were not stored; "
                    "send again later",
                    results=results,
                )
            counts[outcome.status] += 1
            entry: dict[str, Any] = {
                "position": item.position,
                "control_id": outcome.control_id,
                "status": outcome.status,
            }
            if outcome.error is not None:
                entry["reason"] = outcome.error.reason
                entry["detail"] = outcome.error.detail
            results.append(entry)
        status = 422 if counts["rejected"] else 200
        return _json(
            status,
            accepted=counts["accepted"],
            duplicates=counts["duplicate"],
            rejected=counts["rejected"],
            results=results,
        )

    app.router.add_post(PATH, receive)
    return app


def _peer(request: web.Request) -> Peer:
    """The sender: source address and port, and its TLS client certificate if verified."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    port = int(peername[1]) if isinstance(peername, tuple) and len(peername) >= 2 else None
    cert = transport.get_extra_info("peercert") if transport is not None else None
    return Peer.from_certificate("http", request.remote or "?", port, cert or None)


def _json(status: int, *, headers: dict[str, str] | None = None, **body: Any) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


class HttpServer:
    """Runs :func:`create_app` on ``settings.host:settings.port``, over TLS if configured.

    Raises :class:`~carebus.errors.ConfigError` when the TLS files cannot be loaded.
    """

    def __init__(self, settings: HttpSettings, pipeline: Sink) -> None:
        self._settings = settings
        self._ssl: ssl.SSLContext | None = server_ssl_context(settings, section="http")
        auth = (
            TokenAuth.from_file(settings.token_file, "http.token_file")
            if settings.token_file is not None
            else None
        )
        self._app = create_app(pipeline, max_body_bytes=settings.max_body_bytes, auth=auth)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        server = self._site._server if self._site is not None else None
        sockets = getattr(server, "sockets", None)
        if not sockets:
            raise RuntimeError("the HTTP server is not started")
        return int(sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve."""
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(
            self._runner, self._settings.host, self._settings.port, ssl_context=self._ssl
        )
        await self._site.start()
        log.info(
            "http listening",
            host=self._settings.host,
            port=self.port,
            path=PATH,
            tls=self._ssl is not None,
            mutual_tls=self._ssl is not None and self._ssl.verify_mode == ssl.CERT_REQUIRED,
        )

    async def stop(self) -> None:
        """Finish requests in progress and close."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
