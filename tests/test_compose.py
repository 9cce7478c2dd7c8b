"""Tests for docker-compose.yml: wired through the same settings names the code reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from carebus.cli import COMMANDS
from carebus.settings import BrokerSettings, env_names, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
CAREBUS_SERVICES = ("topics", "listener", "worker", "dashboard")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whichever of the two compose forms it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


class TestSettingsNames:
    def test_every_carebus_name_is_a_real_setting(self, compose: dict[str, Any]) -> None:
        """Each CAREBUS_* variable anywhere in the file is one carebus.settings reads."""
        text = (REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8")
        used = set(re.findall(r"\bCAREBUS_[A-Z0-9_]+", text))
        assert used, "the compose file sets no CAREBUS_ variables"
        assert used <= env_names(), sorted(used - env_names())

    @pytest.mark.parametrize("name", CAREBUS_SERVICES)
    def test_each_service_environment_loads_as_settings(
        self, compose: dict[str, Any], name: str
    ) -> None:
        """Each carebus service's environment is accepted by load_settings, values included."""
        settings = load_settings(environment(compose["services"][name]))
        assert settings.uses_local_broker is False

    @pytest.mark.parametrize("name", CAREBUS_SERVICES)
    def test_services_reach_kafka_by_its_advertised_listener(
        self, compose: dict[str, Any], name: str
    ) -> None:
        """The bootstrap servers of each carebus service are the Kafka service's listener."""
        kafka_env = environment(compose["services"]["kafka"])
        advertised = kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        servers = environment(compose["services"][name])["CAREBUS_KAFKA_BOOTSTRAP_SERVERS"]
        assert f"PLAINTEXT://{servers}" in advertised


class TestKafkaService:
    def test_official_image_same_version_as_local_broker(self, compose: dict[str, Any]) -> None:
        """Kafka runs from the official apache/kafka 4.x image, the local broker's version."""
        image = compose["services"]["kafka"]["image"]
        assert image == f"apache/kafka:{BrokerSettings().kafka_version}"
        assert image.startswith("apache/kafka:4.")

    def test_single_node_kraft(self, compose: dict[str, Any]) -> None:
        """One node is broker and controller, and votes for itself; no ZooKeeper."""
        env = environment(compose["services"]["kafka"])
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
        assert not any("ZOOKEEPER" in key for key in env)

    def test_topics_come_only_from_the_declarations(self, compose: dict[str, Any]) -> None:
        """Auto-creation is off, as on the local broker."""
        env = environment(compose["services"]["kafka"])
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


class TestCarebusServices:
    @pytest.mark.parametrize(
        ("name", "command"),
        [("topics", ["topics", "apply"]), ("listener", ["listen"]), ("worker", ["worker"])],
    )
    def test_each_service_runs_a_carebus_command(
        self, compose: dict[str, Any], name: str, command: list[str]
    ) -> None:
        """listener runs `carebus listen`, worker `carebus worker`, topics `topics apply`."""
        service = compose["services"][name]
        assert service["command"] == command
        assert command[0] in COMMANDS

    @pytest.mark.parametrize("name", CAREBUS_SERVICES)
    def test_built_from_the_project_dockerfile(self, compose: dict[str, Any], name: str) -> None:
        """Each carebus service is built from a Dockerfile in this repository."""
        build = compose["services"][name]["build"]
        dockerfile = REPO_ROOT / build["context"] / build["dockerfile"]
        assert dockerfile.is_file()
        assert 'ENTRYPOINT ["carebus"]' in dockerfile.read_text(encoding="utf-8")

    @pytest.mark.parametrize("name", ["listener", "worker"])
    def test_start_after_topics_exist(self, compose: dict[str, Any], name: str) -> None:
        """listener and worker wait for the topics job, which waits for a healthy Kafka."""
        depends = compose["services"][name]["depends_on"]
        assert depends["topics"]["condition"] == "service_completed_successfully"
        topics_depends = compose["services"]["topics"]["depends_on"]
        assert topics_depends["kafka"]["condition"] == "service_healthy"
        assert "healthcheck" in compose["services"]["kafka"]

    def test_listener_publishes_its_mllp_port(self, compose: dict[str, Any]) -> None:
        """The MLLP port the listener is told to use is published."""
        service = compose["services"]["listener"]
        port = environment(service)["CAREBUS_MLLP_PORT"]
        assert environment(service)["CAREBUS_MLLP_HOST"] == "0.0.0.0"
        assert any(str(p).endswith(f":{port}") for p in service["ports"])

    def test_worker_region_config_is_mounted_from_deploy(self, compose: dict[str, Any]) -> None:
        """The worker's region config path is a mount of the sample deploy/region.yaml."""
        service = compose["services"]["worker"]
        target = environment(service)["CAREBUS_WORKER_REGION_CONFIG"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        source = REPO_ROOT / mounts[target]
        assert source.is_file()
        assert "providers" in yaml.safe_load(source.read_text(encoding="utf-8"))


def published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Each published port as (host address, host port, container port); '' = all addresses."""
    found = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            found.append(
                (
                    str(entry.get("host_ip", "")),
                    str(entry.get("published", "")),
                    str(entry["target"]),
                )
            )
            continue
        text = str(entry).split("/")[0]
        if text.startswith("["):  # [::1]:2575:2575
            address, rest = text[1:].split("]:", 1)
            host_port, container = rest.split(":")
        else:
            parts = text.split(":")
            address = parts[0] if len(parts) == 3 else ""
            host_port, container = (parts[-2], parts[-1]) if len(parts) > 1 else ("", parts[0])
        found.append((address, host_port, container))
    return found


class TestLoopbackOnly:
    def test_every_published_port_is_on_loopback(self, compose: dict[str, Any]) -> None:
        """No service publishes a port on an address other machines can reach."""
        ports = [
            (name, port)
            for name, service in compose["services"].items()
            for port in published(service)
        ]
        assert len(ports) >= 6
        exposed = [(name, p) for name, p in ports if p[0] not in {"127.0.0.1", "::1"}]
        assert not exposed

    def test_no_service_shares_the_host_network(self, compose: dict[str, Any]) -> None:
        """Host networking would bypass the loopback-only publishing."""
        for service in compose["services"].values():
            assert service.get("network_mode") != "host"

    @pytest.mark.parametrize(
        ("entry", "address"),
        [
            ("2575:2575", ""),
            ("0.0.0.0:2575:2575", "0.0.0.0"),
            ("127.0.0.1:2575:2575/tcp", "127.0.0.1"),
            ("[::1]:2575:2575", "::1"),
            ({"target": 2575, "published": 2575}, ""),
            ({"target": 2575, "published": 2575, "host_ip": "127.0.0.1"}, "127.0.0.1"),
        ],
    )
    def test_port_forms_are_read_with_their_address(self, entry: Any, address: str) -> None:
        """The check reads the short and long port forms; no address means all of them."""
        assert published({"ports": [entry]}) == [(address, "2575", "2575")]


class TestDurability:
    @pytest.mark.parametrize("name", CAREBUS_SERVICES)
    def test_single_broker_low_durability_is_allowed_explicitly(
        self, compose: dict[str, Any], name: str
    ) -> None:
        """The one-broker compose Kafka is not the local broker, so RF 1 is allowed by name."""
        from carebus.durability import assess, declared, is_local_broker

        settings = load_settings(environment(compose["services"][name]))
        assert not is_local_broker(settings)
        assert settings.topics.allow_low_durability is True
        decision = assess(
            [declared(settings)],
            local=False,
            allow_low_durability=settings.topics.allow_low_durability,
        )
        assert decision.verdict == "allowed"
