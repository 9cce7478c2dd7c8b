"""Tests for carebus.kafka: client configuration (TLS, mutual TLS, SASL/SCRAM) from settings."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
import trustme

from carebus.errors import ConfigError
from carebus.kafka import aiokafka_config, common_config, kafka_python_config
from carebus.settings import KafkaSettings, Settings, load_settings


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    """A CA file, and a client certificate and key for ``carebus-listener``."""
    cafile, cert, key = tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key"
    ca.cert_pem.write_to_path(str(cafile))
    client = ca.issue_cert("carebus-listener", common_name="carebus-listener")
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    return {"cafile": cafile, "cert": cert, "key": key}


def with_kafka(**fields: object) -> Settings:
    return Settings(kafka=KafkaSettings(bootstrap_servers="kafka-0.example:9093", **fields))  # type: ignore[arg-type]


def handshake(ca: trustme.CA, client_ctx: ssl.SSLContext) -> str | None:
    """TLS handshake with a server that requires a client certificate from ``ca``.

    Returns the CN of the certificate the client presented (None: none presented).
    """
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_OPTIONAL
    seen: list[str | None] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert()
                subject = dict(x[0] for x in peer["subject"]) if peer else {}
                seen.append(subject.get("commonName"))
                tls.recv(1)
        except (OSError, ssl.SSLError):
            conn.close()  # the client refused the handshake

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client_ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"x")
    finally:
        thread.join(timeout=30)
        listener.close()
    return seen[0]


class TestPlaintext:
    def test_plaintext_sets_no_tls_and_no_sasl(self) -> None:
        """The default protocol configures neither an SSL context nor a SASL login."""
        cfg = common_config(with_kafka())
        assert cfg["security_protocol"] == "PLAINTEXT"
        assert "ssl_context" not in cfg
        assert not any(k.startswith("sasl_") for k in cfg)


class TestSaslScram:
    def test_scram_over_tls_reads_the_password_from_its_file(
        self, tls_files: dict[str, Path], tmp_path: Path
    ) -> None:
        """SASL_SSL with SCRAM-SHA-512 logs in as the user with the password file's first line."""
        secret = tmp_path / "password"
        secret.write_text("s3cret-from-a-secret\n", encoding="utf-8")
        settings = with_kafka(
            security_protocol="SASL_SSL",
            ssl_cafile=tls_files["cafile"],
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="carebus-listener",
            sasl_password="ignored-when-a-file-is-set",
            sasl_password_file=secret,
        )
        cfg = kafka_python_config(settings)
        assert cfg["security_protocol"] == "SASL_SSL"
        assert cfg["sasl_mechanism"] == "SCRAM-SHA-512"
        assert cfg["sasl_plain_username"] == "carebus-listener"
        assert cfg["sasl_plain_password"] == "s3cret-from-a-secret"
        assert cfg["ssl_context"].check_hostname is True
        assert cfg["ssl_context"].verify_mode == ssl.CERT_REQUIRED
        assert aiokafka_config(settings)["sasl_plain_password"] == "s3cret-from-a-secret"

    def test_environment_settings_select_scram(self, tmp_path: Path) -> None:
        """The CAREBUS_KAFKA_* variables of a deploy load into a SCRAM configuration."""
        secret = tmp_path / "password"
        secret.write_text("pw", encoding="utf-8")
        settings = load_settings(
            {
                "CAREBUS_KAFKA_BOOTSTRAP_SERVERS": "kafka:9093",
                "CAREBUS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "CAREBUS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "CAREBUS_KAFKA_SASL_USERNAME": "carebus-worker",
                "CAREBUS_KAFKA_SASL_PASSWORD_FILE": str(secret),
            }
        )
        cfg = common_config(settings)
        assert (cfg["sasl_mechanism"], cfg["sasl_plain_password"]) == ("SCRAM-SHA-512", "pw")

    async def test_aiokafka_accepts_the_scram_configuration(self, tmp_path: Path) -> None:
        """aiokafka's producer takes the SCRAM-over-TLS keyword arguments as built."""
        from aiokafka import AIOKafkaProducer

        settings = with_kafka(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="u",
            sasl_password="p",
        )
        producer = AIOKafkaProducer(**aiokafka_config(settings))
        assert producer.client._sasl_mechanism == "SCRAM-SHA-512"
        assert producer.client._security_protocol == "SASL_SSL"

    def test_faust_credentials_use_scram_and_the_password_file(self, tmp_path: Path) -> None:
        """The worker's Faust credentials are SASL over TLS with the mechanism and file password."""
        from streams.app import _credentials

        secret = tmp_path / "password"
        secret.write_text("pw-file", encoding="utf-8")
        creds = _credentials(
            with_kafka(
                security_protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-512",
                sasl_username="carebus-worker",
                sasl_password_file=secret,
            )
        )
        assert creds.mechanism.value == "SCRAM-SHA-512"
        assert creds.protocol.value == "SASL_SSL"
        assert (creds.username, creds.password) == ("carebus-worker", "pw-file")

    @pytest.mark.parametrize(
        ("fields", "needle"),
        [
            ({"security_protocol": "SASL_SSL"}, "needs kafka.sasl_mechanism"),
            (
                {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"},
                "needs kafka.sasl_username",
            ),
            (
                {
                    "security_protocol": "SASL_SSL",
                    "sasl_mechanism": "SCRAM-SHA-512",
                    "sasl_username": "u",
                },
                "needs kafka.sasl_username",
            ),
            ({"sasl_mechanism": "SCRAM-SHA-512"}, "use SASL_SSL"),
        ],
    )
    def test_incomplete_sasl_settings_are_a_config_error(
        self, fields: dict[str, str], needle: str
    ) -> None:
        """A SASL login missing its mechanism, user or password is refused in one line."""
        with pytest.raises(ConfigError, match=needle) as info:
            common_config(with_kafka(**fields))
        assert "\n" not in str(info.value)

    def test_unreadable_or_empty_password_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A password file that is missing or empty is named in a ConfigError."""
        empty = tmp_path / "empty"
        empty.write_text("\n", encoding="utf-8")
        for path, needle in ((tmp_path / "missing", "cannot read"), (empty, "is empty")):
            settings = with_kafka(
                security_protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-512",
                sasl_username="u",
                sasl_password_file=path,
            )
            with pytest.raises(ConfigError, match=needle):
                common_config(settings)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("CAREBUS_KAFKA_SECURITY_PROTOCOL", "TLS"),
            ("CAREBUS_KAFKA_SASL_MECHANISM", "SCRAM-SHA-1"),
        ],
    )
    def test_unknown_protocol_or_mechanism_is_refused_when_loading(
        self, name: str, value: str
    ) -> None:
        """Settings reject a security protocol or SASL mechanism Kafka clients do not have."""
        with pytest.raises(ConfigError, match=name.removeprefix("CAREBUS_KAFKA_").lower()):
            load_settings({name: value})


class TestMutualTls:
    def test_client_certificate_is_presented_to_the_broker(
        self, ca: trustme.CA, tls_files: dict[str, Path]
    ) -> None:
        """With SSL and a client certificate, a TLS server requiring one sees its CN."""
        settings = with_kafka(
            security_protocol="SSL",
            ssl_cafile=tls_files["cafile"],
            ssl_certfile=tls_files["cert"],
            ssl_keyfile=tls_files["key"],
        )
        cfg = common_config(settings)
        assert not any(k.startswith("sasl_") for k in cfg)
        assert handshake(ca, cfg["ssl_context"]) == "carebus-listener"

    def test_without_client_certificate_none_is_presented(
        self, ca: trustme.CA, tls_files: dict[str, Path]
    ) -> None:
        """SSL without a certificate is server-authenticated TLS only."""
        cfg = common_config(with_kafka(security_protocol="SSL", ssl_cafile=tls_files["cafile"]))
        assert handshake(ca, cfg["ssl_context"]) is None

    def test_brokers_are_checked_against_the_configured_ca(
        self, tls_files: dict[str, Path]
    ) -> None:
        """A broker certificate from another CA fails the handshake."""
        cfg = common_config(with_kafka(security_protocol="SSL", ssl_cafile=tls_files["cafile"]))
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(trustme.CA(), cfg["ssl_context"])

    def test_certificate_without_key_is_a_config_error(self, tls_files: dict[str, Path]) -> None:
        """A client certificate needs its key (and the reverse)."""
        with pytest.raises(ConfigError, match="set together"):
            common_config(with_kafka(security_protocol="SSL", ssl_certfile=tls_files["cert"]))

    def test_missing_tls_file_is_a_one_line_config_error(self, tmp_path: Path) -> None:
        """A CA file that does not exist is a ConfigError naming the file, not an OSError."""
        missing = tmp_path / "nope.pem"
        with pytest.raises(ConfigError, match=r"nope\.pem") as info:
            common_config(with_kafka(security_protocol="SSL", ssl_cafile=missing))
        assert "\n" not in str(info.value)
