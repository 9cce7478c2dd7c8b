"""Certificates for the TLS tests of the ingest connectors, made in the test (trustme)."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

import trustme


@dataclasses.dataclass(frozen=True)
class Pki:
    """A test CA, the server's certificate (with key) and a client certificate."""

    ca: trustme.CA
    cafile: Path
    server_cert: Path
    client: trustme.LeafCert


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate whose
    CN is ``engine.trust-a.example``; the CA and server files are written to ``directory``."""
    ca = trustme.CA()
    cafile = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    server = ca.issue_cert("127.0.0.1", "localhost", common_name="carebus.test")
    server_cert = directory / "server.pem"
    server.private_key_and_cert_chain_pem.write_to_path(str(server_cert))
    client = ca.issue_cert("engine.trust-a.example", common_name="engine.trust-a.example")
    return Pki(ca, cafile, server_cert, client)


def client_context(pki: Pki, *, with_cert: bool) -> ssl.SSLContext:
    """A client context trusting the test CA, presenting the client certificate if asked."""
    ctx = ssl.create_default_context(cafile=str(pki.cafile))
    if with_cert:
        pki.client.configure_cert(ctx)
    return ctx
