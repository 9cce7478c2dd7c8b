"""carebus's Kafka clients against a real broker that takes only SCRAM-SHA-512 over TLS.

The test starts its own broker (the project's Kafka jars, its own ports and home):
a ``CLIENT`` listener with SASL_SSL and SCRAM-SHA-512 (the deploy/k8s shape), the
StandardAuthorizer denying whatever no ACL allows, and a plaintext listener for the
test's own set-up as a super user. carebus's clients are configured only through
:mod:`carebus.settings` and :mod:`carebus.kafka`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from carebus import broker
from carebus.admin import admin_client
from carebus.kafka import aiokafka_config
from carebus.settings import BrokerSettings, KafkaSettings, Settings
from carebus.topics import TopicSpec, ensure

pytestmark = pytest.mark.integration

LISTENER_PASSWORD = "listenerpw0123456789"
TOPIC_GRANTED = "sec.hl7.raw"
TOPIC_DENIED = "sec.events"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class SecureBroker:
    """Where the broker listens, and the CA its certificate comes from."""

    client: str
    internal: str
    cafile: Path
    home: Path


def _properties(home: Path, keystore: Path, ports: dict[str, int]) -> str:
    host = "127.0.0.1"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{host}:{ports['controller']}",
        "listeners": (
            f"INTERNAL://{host}:{ports['internal']},CLIENT://{host}:{ports['client']},"
            f"CONTROLLER://{host}:{ports['controller']}"
        ),
        "advertised.listeners": (
            f"INTERNAL://{host}:{ports['internal']},CLIENT://{host}:{ports['client']}"
        ),
        "inter.broker.listener.name": "INTERNAL",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,CLIENT:SASL_SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.client.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.client.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
        "log.dirs": str(home / "data"),
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "num.network.threads": "1",
        "num.io.threads": "1",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _java(libs: Path, log4j: Path, *args: str) -> list[str]:
    return ["java", "-Xmx384m", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*", *args]


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    home = tmp_path_factory.mktemp("secure-broker")
    ca = trustme.CA()
    cafile = home / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    leaf = ca.issue_cert("127.0.0.1", "localhost", common_name="kafka-broker")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    keystore = home / "keystore.pem"
    keystore.write_bytes(pkcs8 + b"".join(p.bytes() for p in leaf.cert_chain_pems))
    ports = {"client": _free_port(), "internal": _free_port(), "controller": _free_port()}
    (home / "server.properties").write_text(_properties(home, keystore, ports))
    log4j = home / "log4j2.properties"
    log4j.write_text(broker.LOG4J2_PROPERTIES)
    libs = broker.resolve_jars(BrokerSettings())
    scram = f"SCRAM-SHA-512=[name=carebus-listener,password={LISTENER_PASSWORD}]"
    fmt = _java(
        libs, log4j, "kafka.tools.StorageTool", "format", "--standalone",
        "-t", broker.new_cluster_id(), "-c", str(home / "server.properties"),
        "--add-scram", scram,
    )  # fmt: skip
    subprocess.run(fmt, check=True, capture_output=True, timeout=180, cwd=home)
    with (home / "broker.log").open("ab") as log:
        proc = subprocess.Popen(
            _java(libs, log4j, "kafka.Kafka", str(home / "server.properties")),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=home,
            start_new_session=True,
        )
    internal = f"127.0.0.1:{ports['internal']}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (home / "broker.log").read_text()[-2000:]
            try:
                broker.round_trip(internal, timeout_s=5)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # waiting for a process to come up, not for a condition to hold
        yield SecureBroker(f"127.0.0.1:{ports['client']}", internal, cafile, home)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def super_user(b: SecureBroker) -> Settings:
    """The test's own set-up client: the plaintext listener, a super user."""
    return Settings(kafka=KafkaSettings(bootstrap_servers=b.internal, request_timeout_s=10))


def as_listener(b: SecureBroker, tmp_path: Path, password: str = LISTENER_PASSWORD) -> Settings:
    """carebus-listener's settings, as the k8s deploy gives them (password in a file)."""
    secret = tmp_path / "password"
    secret.write_text(password + "\n", encoding="utf-8")
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=b.client,
            security_protocol="SASL_SSL",
            ssl_cafile=b.cafile,
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="carebus-listener",
            sasl_password_file=secret,
            request_timeout_s=10,
        )
    )


@pytest.fixture(scope="module")
def granted(secure_broker: SecureBroker) -> None:
    """Two topics; carebus-listener may write (and describe) only the first."""
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    settings = super_user(secure_broker)
    ensure(settings, [TopicSpec(TOPIC_GRANTED, 1, 1), TopicSpec(TOPIC_DENIED, 1, 1)])
    pattern = ResourcePattern(ResourceType.TOPIC, TOPIC_GRANTED, ACLResourcePatternType.LITERAL)
    acls = [
        ACL("User:carebus-listener", "*", op, ACLPermissionType.ALLOW, pattern)
        for op in (ACLOperation.WRITE, ACLOperation.DESCRIBE)
    ]
    with admin_client(settings) as admin:
        result = admin.create_acls(acls)
    assert not result["failed"], result


async def _send(settings: Settings, topic: str) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**aiokafka_config(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"control-id-1", key=b"k")
    finally:
        await producer.stop()


class TestScramOverTls:
    async def test_listener_user_publishes_where_its_acl_allows(
        self, secure_broker: SecureBroker, granted: None, tmp_path: Path
    ) -> None:
        """With SCRAM-SHA-512 over TLS from settings, a write its ACL allows is acknowledged."""
        from aiokafka.errors import TopicAuthorizationFailedError

        settings = as_listener(secure_broker, tmp_path)
        deadline = time.monotonic() + 30
        while True:  # ACLs reach the broker's authorizer through the metadata log
            try:
                await _send(settings, TOPIC_GRANTED)
                break
            except TopicAuthorizationFailedError:
                assert time.monotonic() < deadline, "the ACL never took effect"
                await asyncio.sleep(0.2)

    async def test_a_topic_without_an_acl_is_denied(
        self, secure_broker: SecureBroker, granted: None, tmp_path: Path
    ) -> None:
        """The same user cannot write a topic no ACL grants it."""
        from aiokafka.errors import KafkaError

        with pytest.raises(KafkaError) as info:
            await _send(as_listener(secure_broker, tmp_path), TOPIC_DENIED)
        assert "Authorization" in type(info.value).__name__

    async def test_a_wrong_password_is_refused(
        self, secure_broker: SecureBroker, granted: None, tmp_path: Path
    ) -> None:
        """A SCRAM login with a wrong password publishes nothing: the producer cannot start.

        (The clients report it as a failed bootstrap, not as an authentication error.)
        """
        from aiokafka.errors import KafkaError

        settings = as_listener(secure_broker, tmp_path, password="not-the-password")
        with pytest.raises(KafkaError):
            await _send(settings, TOPIC_GRANTED)

    def test_plaintext_to_the_tls_listener_gets_nowhere(self, secure_broker: SecureBroker) -> None:
        """A client without TLS and SASL cannot use the client listener."""
        from carebus.errors import CarebusError

        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=secure_broker.client, request_timeout_s=3)
        )
        with contextlib.suppress(CarebusError), admin_client(settings) as admin:
            topics = admin.list_topics()
            pytest.fail(f"a plaintext client listed topics: {topics}")
