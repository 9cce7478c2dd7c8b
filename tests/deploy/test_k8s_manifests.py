"""The Kubernetes manifests in deploy/k8s are structurally sound and match the code."""

from __future__ import annotations

import functools
import ipaddress
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from carebus.durability import assess, declared, is_local_broker
from carebus.settings import Settings, env_names, load_settings
from carebus.topics import TopicNames

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


@functools.cache
def _documents() -> list[dict[str, Any]]:
    """Every manifest document, parsed once (tests only read them)."""
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


#: The carebus workloads: (kind, name) -> the SCRAM user each logs in to Kafka as.
WORKLOADS = {
    ("Job", "carebus-topics"): "carebus-topics",
    ("Deployment", "carebus-listener"): "carebus-listener",
    ("StatefulSet", "carebus-worker"): "carebus-worker",
    ("Deployment", "carebus-dashboard"): "carebus-dashboard",
}


def _pod_spec(kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = _by_kind_name(kind, name)["spec"]["template"]["spec"]
    return spec


def _workload_settings(kind: str, name: str) -> Settings:
    """The settings a carebus workload runs with: the shared ConfigMap, then its own env."""
    return load_settings({**_config_env(), **_env(_by_kind_name(kind, name))})


def _mounted(kind: str, name: str, path: Path | None) -> list[dict[str, Any]]:
    """The volume sources behind file ``path`` in the workload's container (key, volume)."""
    assert path is not None
    spec = _pod_spec(kind, name)
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    file = PurePosixPath(str(path))
    for mount in container["volumeMounts"]:
        if file.parent == PurePosixPath(mount["mountPath"]):
            volume = volumes[mount["name"]]
            return _sources(volume, file.name)
    raise AssertionError(f"{path} is not in a mounted volume of {name}")


def _sources(volume: dict[str, Any], filename: str) -> list[dict[str, Any]]:
    """[{"kind": "secret"|"configMap", "name": ..., "key": ...}] providing ``filename``."""
    found = []
    if "projected" in volume:
        parts = volume["projected"]["sources"]
    else:
        parts = [{k: v} for k, v in volume.items() if k in {"secret", "configMap"}]
    for part in parts:
        for kind in ("secret", "configMap"):
            if kind not in part:
                continue
            src = part[kind]
            name = src.get("name") or src.get("secretName")
            items = src.get("items")
            if items is None:
                found.append({"kind": kind, "name": name, "key": filename})
            found += [
                {"kind": kind, "name": name, "key": i["key"]}
                for i in items or []
                if i["path"] == filename
            ]
    return found


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
        """Every CAREBUS_* name in the config map and the workloads' env is a real setting."""
        unknown = set(_config_env()) - env_names()
        assert not unknown
        for kind, name in WORKLOADS:
            names = {n for n in _env(_by_kind_name(kind, name)) if n.startswith("CAREBUS_")}
            assert names <= env_names(), name

    @pytest.mark.parametrize(("kind", "name"), list(WORKLOADS))
    def test_each_workload_refuses_privileges(self, kind: str, name: str) -> None:
        """carebus pods run as a non-root user, without privilege escalation or capabilities."""
        spec = _pod_spec(kind, name)
        assert spec["securityContext"]["runAsNonRoot"] is True
        (container,) = spec["containers"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]

    def test_topics_are_replicated_three_times_with_two_in_sync(self) -> None:
        """carebus creates its topics with replication 3 and min.insync.replicas 2."""
        env = _config_env()
        assert env["CAREBUS_TOPICS_REPLICATION_FACTOR"] == "3"
        assert env["CAREBUS_TOPICS_MIN_INSYNC_REPLICAS"] == "2"

    def test_each_worker_advertises_its_own_address_and_needs_a_token(self) -> None:
        """Alert lookups reach the worker that owns the key, and only with the token."""
        env = _env(_by_kind_name("StatefulSet", "carebus-worker"))
        assert env["CAREBUS_WORKER_ADVERTISED_URL"] == "http://$(POD_IP):6066"
        assert _config_env()["CAREBUS_WORKER_WEB_TOKEN_FILE"] == "/etc/carebus/web/token"

    def test_durability_check_passes_without_being_relaxed(self) -> None:
        """The deploy's settings pass the durability check on their own merits."""
        settings = load_settings(_config_env())
        assert not is_local_broker(settings)
        assert settings.topics.allow_low_durability is False
        decision = assess([declared(settings)], local=False, allow_low_durability=False)
        assert decision.verdict == "durable"


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


def _region_providers() -> set[str]:
    region = yaml.safe_load(_by_kind_name("ConfigMap", "carebus-region")["data"]["region.yaml"])
    return set(region["providers"])


class TestMllpExposure:
    def test_load_balancer_is_internal_and_limited_to_private_source_ranges(self) -> None:
        """The MLLP load balancer is internal and takes only private senders' networks."""
        svc = _by_kind_name("Service", "carebus-mllp")
        annotations = svc["metadata"].get("annotations", {})
        internal = {
            "networking.gke.io/load-balancer-type": "Internal",
            "service.beta.kubernetes.io/azure-load-balancer-internal": "true",
            "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
        }
        assert internal.items() <= annotations.items()
        ranges = [ipaddress.ip_network(r) for r in svc["spec"]["loadBalancerSourceRanges"]]
        assert ranges
        assert all(r.is_private and r.prefixlen >= 8 for r in ranges)
        assert svc["spec"]["externalTrafficPolicy"] == "Local"

    def test_a_sender_stays_on_one_listener(self) -> None:
        """Each sender's address sticks to one listener pod, whose duplicate window saw its
        earlier messages (each pod keeps its own)."""
        spec = _by_kind_name("Service", "carebus-mllp")["spec"]
        assert spec["sessionAffinity"] == "ClientIP"
        assert spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] >= 3600

    def test_network_policy_admits_mllp_from_the_same_ranges(self) -> None:
        """The listener's NetworkPolicy lets in on the MLLP port exactly the LB's ranges."""
        svc = _by_kind_name("Service", "carebus-mllp")
        policy = _by_kind_name("NetworkPolicy", "carebus-listener")
        cidrs = {
            peer["ipBlock"]["cidr"]
            for rule in policy["spec"]["ingress"]
            if any(p["port"] == 2575 for p in rule["ports"])
            for peer in rule["from"]
        }
        assert cidrs == set(svc["spec"]["loadBalancerSourceRanges"])

    def test_listener_serves_tls_with_client_certificates_from_a_secret(self) -> None:
        """MLLP certificate, key and client CA are files of the carebus-mllp-tls Secret."""
        settings = _workload_settings("Deployment", "carebus-listener")
        files = {
            settings.mllp.tls_certfile: "tls.crt",
            settings.mllp.tls_keyfile: "tls.key",
            settings.mllp.tls_client_cafile: "ca.crt",
        }
        for path, key in files.items():
            assert _mounted("Deployment", "carebus-listener", path) == [
                {"kind": "secret", "name": "carebus-mllp-tls", "key": key}
            ]
        assert settings.mllp.port == 2575

    def test_allow_list_comes_from_a_config_map_and_loads(self, tmp_path: Path) -> None:
        """The sender allow-list is the carebus-mllp-senders ConfigMap, valid for carebus."""
        from connectors.mllp.allowlist import Peer, load_allowlist

        settings = _workload_settings("Deployment", "carebus-listener")
        path = settings.mllp.allowed_senders_file
        (source,) = _mounted("Deployment", "carebus-listener", path)
        assert (source["kind"], source["name"]) == ("configMap", "carebus-mllp-senders")
        text = _by_kind_name("ConfigMap", "carebus-mllp-senders")["data"][source["key"]]
        copy = tmp_path / "allowed-senders.yaml"
        copy.write_text(text, encoding="utf-8")
        allowlist = load_allowlist(copy)
        assert allowlist is not None
        entries = yaml.safe_load(text)["peers"]
        facilities = {f for e in entries for f in e["facilities"]}
        assert facilities <= _region_providers()
        assert "*" not in facilities
        stranger = Peer("mllp", "10.20.0.9", 40000, "engine.elsewhere.example")
        assert not any(allowlist.allows(stranger, f) for f in _region_providers())


def _kafka_env() -> dict[str, str]:
    env = _env(_by_kind_name("StatefulSet", "kafka"))
    args = " ".join(_pod_spec("StatefulSet", "kafka")["containers"][0]["args"])
    advertised = args.split('KAFKA_ADVERTISED_LISTENERS="', 1)[1].split('"', 1)[0]
    return {**env, "KAFKA_ADVERTISED_LISTENERS": advertised}


def _listener_map() -> dict[str, str]:
    pairs = _kafka_env()["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    return dict(p.split(":", 1) for p in pairs)


def _listener_ports() -> dict[str, int]:
    return {
        entry.split("://")[0]: int(entry.rsplit(":", 1)[1])
        for entry in _kafka_env()["KAFKA_LISTENERS"].split(",")
    }


class TestKafkaSecurity:
    def test_no_listener_is_plaintext(self) -> None:
        """Every Kafka listener, controller included, is TLS (SSL or SASL_SSL)."""
        listeners = _listener_map()
        assert set(listeners) == set(_listener_ports())
        assert set(listeners.values()) <= {"SSL", "SASL_SSL"}
        advertised = _kafka_env()["KAFKA_ADVERTISED_LISTENERS"].split(",")
        assert {a.split("://")[0] for a in advertised} <= set(listeners)

    def test_clients_use_scram_over_tls_on_the_port_carebus_is_given(self) -> None:
        """The port carebus bootstraps from is the SASL_SSL listener, SCRAM-SHA-512 only."""
        env = _kafka_env()
        ports = _listener_ports()
        servers = _config_env()["CAREBUS_KAFKA_BOOTSTRAP_SERVERS"].split(",")
        (client,) = {
            name for name, port in ports.items() if all(s.endswith(f":{port}") for s in servers)
        }
        assert _listener_map()[client] == "SASL_SSL"
        assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
        prefix = f"KAFKA_LISTENER_NAME_{client}_"
        assert env[prefix + "SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
        assert "ScramLoginModule" in env[prefix + "SCRAM___SHA___512_SASL_JAAS_CONFIG"]

    def test_brokers_and_controllers_authenticate_each_other_by_certificate(self) -> None:
        """Inter-broker and controller listeners are SSL with client certificates required."""
        env = _kafka_env()
        for name in (
            env["KAFKA_INTER_BROKER_LISTENER_NAME"],
            env["KAFKA_CONTROLLER_LISTENER_NAMES"],
        ):
            assert _listener_map()[name] == "SSL"
            assert env[f"KAFKA_LISTENER_NAME_{name}_SSL_CLIENT_AUTH"] == "required"
        assert env["KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM"] == "https"

    def test_every_request_is_authorized_and_unknown_means_denied(self) -> None:
        """ACLs are enforced, no ACL denies, and only broker and admin are super users."""
        env = _kafka_env()
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        assert set(env["KAFKA_SUPER_USERS"].split(";")) == {"User:kafka-broker", "User:kafka-admin"}

    def test_broker_tls_material_comes_from_a_secret(self) -> None:
        """The brokers' trust store and key material are the kafka-broker-tls Secret's files."""
        env = _kafka_env()
        spec = _pod_spec("StatefulSet", "kafka")
        (container,) = spec["containers"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        truststore = PurePosixPath(env["KAFKA_SSL_TRUSTSTORE_LOCATION"])
        (mount,) = [
            m
            for m in container["volumeMounts"]
            if PurePosixPath(m["mountPath"]) == truststore.parent
        ]
        assert volumes[mount["name"]]["secret"]["secretName"] == "kafka-broker-tls"
        args = " ".join(container["args"])
        tls = truststore.parent
        keystore = env["KAFKA_SSL_KEYSTORE_LOCATION"]
        assert f"cat {tls}/tls.key {tls}/tls.crt > {keystore}" in args


class TestKafkaClients:
    @pytest.mark.parametrize(("kind", "name"), list(WORKLOADS))
    def test_each_workload_logs_in_with_scram_over_tls(self, kind: str, name: str) -> None:
        """Each carebus workload connects with SASL_SSL, SCRAM-SHA-512, as its own user."""
        settings = _workload_settings(kind, name)
        k = settings.kafka
        assert (k.security_protocol, k.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
        assert k.ssl_check_hostname is True
        assert k.sasl_username == WORKLOADS[(kind, name)]
        assert k.sasl_password is None

    @pytest.mark.parametrize(("kind", "name"), list(WORKLOADS))
    def test_each_workload_mounts_only_its_own_password(self, kind: str, name: str) -> None:
        """The password file is its own key of carebus-kafka-scram; the CA is a ConfigMap."""
        k = _workload_settings(kind, name).kafka
        assert _mounted(kind, name, k.sasl_password_file) == [
            {"kind": "secret", "name": "carebus-kafka-scram", "key": WORKLOADS[(kind, name)]}
        ]
        assert _mounted(kind, name, k.ssl_cafile) == [
            {"kind": "configMap", "name": "kafka-ca", "key": "ca.crt"}
        ]

    def test_users_are_distinct(self) -> None:
        """No two workloads share a Kafka user, so ACLs can tell them apart."""
        assert len(set(WORKLOADS.values())) == len(WORKLOADS)


@dataclass(frozen=True)
class Acl:
    principal: str
    operation: str
    resource: str
    pattern: str
    name: str


def _acls() -> list[Acl]:
    text = _by_kind_name("ConfigMap", "kafka-security")["data"]["acls.tsv"]
    rows = [
        line.split()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert all(len(r) == 5 for r in rows), [r for r in rows if len(r) != 5]
    return [Acl(*r) for r in rows]


def _grants(principal: str, operation: str, resource: str = "topic") -> set[tuple[str, str]]:
    """(pattern, name) of every ``operation`` ACL of ``principal`` on ``resource``."""
    return {
        (a.pattern, a.name)
        for a in _acls()
        if a.principal == principal and a.operation == operation and a.resource == resource
    }


class TestAcls:
    @pytest.fixture(scope="class")
    def names(self) -> TopicNames:
        return TopicNames.from_settings(load_settings(_config_env()).topics)

    @pytest.fixture(scope="class")
    def app_id(self) -> str:
        return load_settings(_config_env()).worker.app_id

    def test_table_is_well_formed_and_never_wildcard(self) -> None:
        """Every ACL names a known operation, resource and pattern; none is a wildcard."""
        operations = {
            "Read",
            "Write",
            "Create",
            "Describe",
            "DescribeConfigs",
            "AlterConfigs",
            "Alter",
        }
        for a in _acls():
            assert a.principal.startswith("User:") and a.principal != "User:*"
            assert a.operation in operations, a
            assert a.resource in {"topic", "group", "transactional-id"}, a
            assert a.pattern in {"literal", "prefixed"}, a
            assert "*" not in a.name, a

    def test_listener_writes_raw_events_and_dead_letters_and_reads_nothing(
        self, names: TopicNames
    ) -> None:
        """The listener may write raw, events and dead letters, and read no topic at all."""
        user = "User:carebus-listener"
        assert _grants(user, "Write") == {
            ("literal", t) for t in (names.raw, names.events, names.deadletter)
        }
        assert not _grants(user, "Read")
        assert not [a for a in _acls() if a.principal == user and a.resource != "topic"]
        touched = {a.name for a in _acls() if a.principal == user}
        assert touched == {names.raw, names.events, names.deadletter}

    def test_worker_reads_events_and_writes_only_its_outputs(
        self, names: TopicNames, app_id: str
    ) -> None:
        """The worker reads events and status, writes alerts, status, ops and engine errors;
        raw it cannot read."""
        user = "User:carebus-worker"
        internal = ("prefixed", f"{app_id}-")
        assert _grants(user, "Read") == {
            ("literal", names.events),
            ("literal", names.alerts),
            ("literal", names.alert_status),
            internal,
        }
        assert _grants(user, "Write") == {
            ("literal", names.alerts),
            ("literal", names.alert_status),
            ("literal", names.ops),
            ("literal", names.engine_errors),
            ("prefixed", names.alerts_for("")),
            internal,
        }
        assert _grants(user, "Read", "group") == {("prefixed", app_id)}

    def test_worker_grants_cover_the_names_the_worker_uses(
        self, names: TopicNames, app_id: str
    ) -> None:
        """Its control topic, provider topics and transactional ids fall under its prefixes."""
        from streams.app import control_topic_name
        from streams.delivery import AlertDelivery

        settings = load_settings(_config_env())
        assert control_topic_name(settings).startswith(f"{app_id}-")
        writes = {n for p, n in _grants("User:carebus-worker", "Write") if p == "prefixed"}
        assert any(names.alerts_for("RX1").startswith(p) for p in writes)
        transactional = _grants("User:carebus-worker", "Write", "transactional-id")
        delivery = AlertDelivery(
            settings, app_id=app_id, providers=_region_providers(), clients=object()
        )  # type: ignore[arg-type]
        prefix = delivery.transactional_prefix
        assert any(f"{prefix}.0".startswith(n) for _, n in transactional)

    def test_each_integrator_reads_only_its_providers_alert_topic(self, names: TopicNames) -> None:
        """Each provider's integrator reads its own alert topic and no other topic."""
        for provider in _region_providers():
            user = f"User:integrator-{provider}"
            assert _grants(user, "Read") == {("literal", names.alerts_for(provider))}
            assert _grants(user, "Write") <= {("literal", names.alert_status)}
            assert _grants(user, "Read", "group") == {("prefixed", f"integrator-{provider}-")}
            touched = {a.name for a in _acls() if a.principal == user and a.resource == "topic"}
            assert touched == {names.alerts_for(provider), names.alert_status}

    def test_only_the_topics_job_creates_carebus_topics(self, names: TopicNames) -> None:
        """Creating and reconfiguring the declared topics is the topics Job's grant."""
        creators = {
            a.principal
            for a in _acls()
            if a.operation in {"Create", "AlterConfigs"} and a.name == f"{names.prefix}."
        }
        assert creators == {"User:carebus-topics"}

    def test_every_workload_user_has_acls(self) -> None:
        """Each carebus Kafka user has its grants in the ACL table."""
        principals = {a.principal for a in _acls()}
        assert {f"User:{u}" for u in WORKLOADS.values()} <= principals

    def test_security_job_applies_users_and_acls_as_the_admin(self) -> None:
        """The kafka-security Job runs the script with the admin cert, SCRAM secret and table."""
        spec = _pod_spec("Job", "kafka-security")
        (container,) = spec["containers"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert mounts["/etc/kafka/admin"]["secret"]["secretName"] == "kafka-admin-tls"
        assert mounts["/etc/kafka/scram"]["secret"]["secretName"] == "carebus-kafka-scram"
        assert mounts["/etc/kafka/security"]["configMap"]["name"] == "kafka-security"
        script = _by_kind_name("ConfigMap", "kafka-security")["data"]["apply.sh"]
        assert container["command"] == ["/bin/bash", "/etc/kafka/security/apply.sh"]
        internal = _listener_ports()[_kafka_env()["KAFKA_INTER_BROKER_LISTENER_NAME"]]
        assert f":{internal}" in script and "security.protocol=SSL" in script
        assert "SCRAM-SHA-512=[" in script and "kafka-acls.sh" in script and "acls.tsv" in script

    @pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
    def test_security_script_is_valid_bash(self, tmp_path: Path) -> None:
        """The kafka-security script parses as bash."""
        script = tmp_path / "apply.sh"
        script.write_text(_by_kind_name("ConfigMap", "kafka-security")["data"]["apply.sh"])
        result = subprocess.run(
            ["bash", "-n", str(script)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr


# -- NetworkPolicies ---------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace and labels) or an address outside the cluster."""

    name: str
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    ip: str | None = None

    @property
    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def _pod(name: str) -> Endpoint:
    return Endpoint(name, "carebus", {"app.kubernetes.io/name": name})


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "the evaluator knows matchLabels only"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_matches(peer: Mapping[str, Any], other: Endpoint, namespace: str) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if other.ip is not None:
        return False
    if "namespaceSelector" in peer:
        ns_ok = _selects(peer["namespaceSelector"], other.ns_labels)
    else:
        ns_ok = other.namespace == namespace
    return ns_ok and _selects(peer.get("podSelector", {}), other.labels)


def _allowed(direction: str, subject: Endpoint, peer: Endpoint, port: int) -> bool:
    """Whether ``subject``'s policies let ``port`` traffic in from / out to ``peer``."""
    if subject.ip is not None:
        return True  # outside the cluster: no policy applies
    policies = [
        d
        for d in _documents()
        if d["kind"] == "NetworkPolicy"
        and d["metadata"]["namespace"] == subject.namespace
        and _selects(d["spec"]["podSelector"], subject.labels)
        and direction in d["spec"]["policyTypes"]
    ]
    if not policies:
        return True
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in policies:
        for rule in policy["spec"].get(key, []):
            ports = rule.get("ports")
            if ports and not any(p["port"] == port for p in ports):
                continue
            peers = rule.get(peers_key)
            if peers is None or any(
                _peer_matches(p, peer, policy["metadata"]["namespace"]) for p in peers
            ):
                return True
    return False


def reachable(source: Endpoint, target: Endpoint, port: int) -> bool:
    return _allowed("Egress", source, target, port) and _allowed("Ingress", target, source, port)


LISTENER, WORKER, DASHBOARD = (
    _pod("carebus-listener"),
    _pod("carebus-worker"),
    _pod("carebus-dashboard"),
)
TOPICS, KAFKA, SECURITY_JOB = _pod("carebus-topics"), _pod("kafka"), _pod("kafka-security")
OTHER_POD = Endpoint("debug pod in carebus", "carebus", {"app": "debug"})
MONITORING = Endpoint("prometheus", "monitoring", {"app": "prometheus"})
OPERATORS = Endpoint("operator", "ops", {}, {"carebus.nhs.uk/operators": "true"})
INTEGRATOR = Endpoint("integrator", "trust-a", {}, {"carebus.nhs.uk/integrator": "true"})
ELSEWHERE = Endpoint("pod in another namespace", "default", {"app": "web"})
SENDER = Endpoint("interface engine", ip="10.20.3.4")
STRANGER = Endpoint("host on another network", ip="10.99.0.1")
INTERNET = Endpoint("internet", ip="203.0.113.9")

TARGETS = [LISTENER, WORKER, DASHBOARD, TOPICS, KAFKA, SECURITY_JOB]
SOURCES = [
    *TARGETS,
    OTHER_POD,
    MONITORING,
    OPERATORS,
    INTEGRATOR,
    ELSEWHERE,
    SENDER,
    STRANGER,
    INTERNET,
]
PORTS = [2575, 8080, 9464, 9465, 6066, 8088, 9092, 9093, 9094]

#: Every (source, target, port) that may connect; everything else must be denied.
ALLOWED = {
    (SENDER.name, LISTENER.name, 2575),
    (MONITORING.name, LISTENER.name, 9464),
    (MONITORING.name, WORKER.name, 9465),
    (MONITORING.name, DASHBOARD.name, 8088),
    (OPERATORS.name, DASHBOARD.name, 8088),
    (WORKER.name, WORKER.name, 6066),
    *((s.name, KAFKA.name, 9092) for s in (LISTENER, WORKER, DASHBOARD, TOPICS, INTEGRATOR)),
    (KAFKA.name, KAFKA.name, 9093),
    (KAFKA.name, KAFKA.name, 9094),
    (SECURITY_JOB.name, KAFKA.name, 9094),
}


class TestNetworkPolicies:
    def test_everything_is_denied_by_default(self) -> None:
        """A policy selects every pod for ingress and egress and allows nothing itself."""
        policy = _by_kind_name("NetworkPolicy", "default-deny")
        assert policy["spec"]["podSelector"] == {}
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        assert not policy["spec"].get("ingress") and not policy["spec"].get("egress")

    @pytest.mark.parametrize("target", TARGETS, ids=lambda e: e.name)
    def test_only_the_intended_paths_are_open(self, target: Endpoint) -> None:
        """Who reaches this pod on which port is exactly the intended matrix."""
        opened = {
            (s.name, target.name, port)
            for s in SOURCES
            for port in PORTS
            if reachable(s, target, port)
        }
        assert opened == {a for a in ALLOWED if a[1] == target.name}

    def test_every_pod_may_resolve_names(self) -> None:
        """DNS to the cluster's resolver is open to every carebus pod."""
        dns = Endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"})
        for pod in TARGETS:
            assert reachable(pod, dns, 53)
        assert not reachable(LISTENER, INTERNET, 443)

    def test_every_carebus_pod_is_selected_by_a_policy_of_its_own(self) -> None:
        """Each workload's pods carry the label its NetworkPolicy selects."""
        for kind, name in [*WORKLOADS, ("StatefulSet", "kafka"), ("Job", "kafka-security")]:
            labels = _by_kind_name(kind, name)["spec"]["template"]["metadata"]["labels"]
            policy = _by_kind_name("NetworkPolicy", name)
            assert _selects(policy["spec"]["podSelector"], labels)
