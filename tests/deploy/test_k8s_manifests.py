"""The Kubernetes manifests in deploy/k8s are structurally sound and match the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from carebus.settings import env_names

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def _documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _by_kind_name(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def _env(doc: dict[str, Any]) -> dict[str, str]:
    return {
        e["name"]: e.get("value", "")
        for c in doc["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
    }


def _config_env() -> dict[str, str]:
    data: dict[str, str] = _by_kind_name("ConfigMap", "carebus-env")["data"]
    return data


class TestManifestStructure:
    def test_every_document_has_api_version_kind_and_name(self) -> None:
        """Each manifest document names its apiVersion, kind and metadata.name."""
        docs = _documents()
        assert docs
        for d in docs:
            assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name")

    def test_workload_selectors_match_their_pod_labels(self) -> None:
        """A Deployment or StatefulSet selects the pods its template labels."""
        for d in _documents():
            if d["kind"] not in {"Deployment", "StatefulSet"}:
                continue
            selector = d["spec"]["selector"]["matchLabels"]
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), d["metadata"]["name"]

    def test_probes_use_declared_ports(self) -> None:
        """Every probe points at a port the container declares, by name or number."""
        for d in _documents():
            if d["kind"] not in {"Deployment", "StatefulSet"}:
                continue
            for c in d["spec"]["template"]["spec"]["containers"]:
                ports = {p["name"] for p in c["ports"]} | {p["containerPort"] for p in c["ports"]}
                for probe in ("livenessProbe", "readinessProbe"):
                    spec = c[probe]
                    action = spec.get("httpGet") or spec.get("tcpSocket")
                    assert action["port"] in ports, (d["metadata"]["name"], probe)


class TestCarebusWorkloads:
    def test_listener_and_worker_probe_healthz_and_readyz(self) -> None:
        """Listeners and workers are probed on /healthz (liveness) and /readyz (readiness)."""
        for kind, name in (("Deployment", "carebus-listener"), ("StatefulSet", "carebus-worker")):
            (c,) = _by_kind_name(kind, name)["spec"]["template"]["spec"]["containers"]
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"

    def test_several_workers_share_partitions(self) -> None:
        """More than one worker runs, so partitions are shared across them."""
        assert _by_kind_name("StatefulSet", "carebus-worker")["spec"]["replicas"] > 1

    def test_listeners_sit_behind_a_tcp_load_balancer(self) -> None:
        """The MLLP service is a TCP LoadBalancer in front of the listener pods."""
        svc = _by_kind_name("Service", "carebus-mllp")
        assert svc["spec"]["type"] == "LoadBalancer"
        assert {p["protocol"] for p in svc["spec"]["ports"]} == {"TCP"}
        assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "carebus-listener"}

    def test_configmap_uses_only_settings_the_code_reads(self) -> None:
        """Every CAREBUS_* name in the config map is a real setting."""
        unknown = set(_config_env()) - env_names()
        assert not unknown

    def test_topics_are_replicated_three_times_with_two_in_sync(self) -> None:
        """carebus creates its topics with replication 3 and min.insync.replicas 2."""
        env = _config_env()
        assert env["CAREBUS_TOPICS_REPLICATION_FACTOR"] == "3"
        assert env["CAREBUS_TOPICS_MIN_INSYNC_REPLICAS"] == "2"


class TestKafkaCluster:
    def test_three_brokers_with_durable_defaults(self) -> None:
        """Kafka runs three brokers, replication 3, min.insync.replicas 2, no unclean election."""
        kafka = _by_kind_name("StatefulSet", "kafka")
        assert kafka["spec"]["replicas"] == 3
        env = _env(kafka)
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"

    @pytest.mark.parametrize("node", [0, 1, 2])
    def test_every_broker_is_a_controller_voter(self, node: int) -> None:
        """Each of the three brokers' ordinals is in the KRaft controller quorum."""
        voters = _env(_by_kind_name("StatefulSet", "kafka"))["KAFKA_CONTROLLER_QUORUM_VOTERS"]
        assert f"{node}@kafka-{node}." in voters


class TestRegionConfig:
    @pytest.mark.parametrize(
        ("kind", "name"),
        [
            ("Deployment", "carebus-listener"),
            ("StatefulSet", "carebus-worker"),
            ("Deployment", "carebus-dashboard"),
        ],
    )
    def test_region_config_is_mounted_where_settings_expect_it(self, kind: str, name: str) -> None:
        """Each carebus process mounts the region ConfigMap at the configured path."""
        path = Path(_config_env()["CAREBUS_WORKER_REGION_CONFIG"])
        spec = _by_kind_name(kind, name)["spec"]["template"]["spec"]
        volumes = {
            v["name"]
            for v in spec["volumes"]
            if v.get("configMap", {}).get("name") == "carebus-region"
        }
        (c,) = spec["containers"]
        mounts = {m["mountPath"] for m in c["volumeMounts"] if m["name"] in volumes}
        assert str(path.parent) in mounts
