"""Tests for carebus.metrics: naming conventions, bounded labels, folding."""

from __future__ import annotations

import random
import re
import string
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from carebus.errors import MessageRejected
from carebus.metrics import (
    ACK_CODES,
    EVENT_TYPES,
    FILEDROP_REFUSAL_REASONS,
    MESSAGE_TYPES,
    METRICS,
    OPS_ALERT_KINDS,
    OTHER,
    ROLES,
    RULES,
    Metrics,
    Role,
    known_reasons,
)
from carebus.topics import TopicNames

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVIDERS = ("RX1", "G0001", "HSP01")
NAME = re.compile(r"^carebus_[a-z][a-z0-9_]*[a-z0-9]$")
#: Label names that could only ever carry patient data.
PATIENT_LABELS = {"patient", "nhs_number", "patient_key", "name", "dob", "control_id", "key"}


def exercise(m: Metrics, rng: random.Random, n: int = 300) -> None:
    """Call every method with mostly garbage label values."""

    def junk() -> str:
        return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(10))

    for _ in range(n):
        p = rng.choice([*PROVIDERS, junk(), "", "9434765919"])
        t = rng.choice([*MESSAGE_TYPES, junk(), "ADT^A01", "ORU^R01^ORU_R01"])
        m.message_received(p, t)
        m.message_accepted(p, t)
        m.message_rejected(p, t)
        m.message_duplicated(p, t)
        m.dead_lettered(p, rng.choice([*known_reasons(), junk()]))
        m.ack_sent(rng.choice([*ACK_CODES, junk()]), rng.random())
        m.produce_error(rng.choice(["carebus.events", "carebus.hl7.raw", junk()]))
        m.event_processed(rng.choice([*EVENT_TYPES, junk()]))
        m.alert_raised(rng.choice([*RULES, junk()]))
        m.set_consumer_lag(rng.choice(["carebus.events", junk()]), rng.randrange(6), 5)
        m.set_feed_silent(p, rng.random() < 0.5)
        m.ops_alert_raised(rng.choice([*OPS_ALERT_KINDS, junk()]))
        m.filedrop_file_refused(rng.choice([*FILEDROP_REFUSAL_REASONS, junk()]))
    m.connection_opened()
    m.set_deadlines_pending(3)
    m.filedrop_restarted()


def families(m: Metrics) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(m.render().decode())}


class TestNaming:
    def test_every_name_follows_prometheus_conventions(self) -> None:
        """Names are carebus_-prefixed snake case; counters end _total, gauges never do."""
        for spec in METRICS:
            assert NAME.match(spec.name), spec.name
            if spec.kind == "counter":
                assert spec.name.endswith("_total"), spec.name
            else:
                assert not spec.name.endswith("_total"), spec.name
            assert not re.search(r"_(ms|milliseconds|minutes|hours|bytes_total_total)$", spec.name)

    def test_durations_are_in_seconds(self) -> None:
        """Every histogram measures time in base units, so its name ends _seconds."""
        histograms = [s for s in METRICS if s.kind == "histogram"]
        assert histograms
        for spec in histograms:
            assert spec.name.endswith("_seconds"), spec.name

    def test_timestamps_are_unix_seconds(self) -> None:
        """A timestamp gauge is named _timestamp_seconds."""
        for spec in METRICS:
            if "timestamp" in spec.name:
                assert spec.name.endswith("_timestamp_seconds"), spec.name

    def test_no_label_can_hold_a_patient(self) -> None:
        """No metric has a label whose name suggests patient data."""
        for spec in METRICS:
            assert not PATIENT_LABELS & set(spec.labels), spec.name

    def test_exposed_names_match_the_declared_table(self) -> None:
        """What /metrics exposes is exactly the METRICS table, with the same types."""
        m = Metrics(providers=PROVIDERS)
        exercise(m, random.Random(1), n=5)
        exposed = {name: fam.type for name, fam in families(m).items()}
        declared = {s.name.removesuffix("_total"): s.kind for s in METRICS}
        assert exposed == declared

    def test_the_issue_names_are_present(self) -> None:
        """The metrics the issue asks for exist under their documented names."""
        names = {s.name for s in METRICS}
        assert {
            "carebus_mllp_messages_received_total",
            "carebus_mllp_messages_accepted_total",
            "carebus_mllp_messages_rejected_total",
            "carebus_mllp_messages_duplicated_total",
            "carebus_mllp_ack_latency_seconds",
            "carebus_mllp_open_connections",
            "carebus_kafka_produce_errors_total",
            "carebus_worker_events_processed_total",
            "carebus_worker_consumer_lag",
            "carebus_worker_alerts_raised_total",
            "carebus_worker_deadlines_pending",
            "carebus_deadletters_total",
        } <= names

    def test_every_metric_is_documented(self) -> None:
        """docs/operations.md names every metric with each of its labels."""
        doc = (REPO_ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
        for spec in METRICS:
            assert f"`{spec.name}`" in doc, spec.name
            for label in spec.labels:
                assert f"`{label}`" in doc, (spec.name, label)


class TestCardinality:
    def test_label_sets_stay_bounded_under_arbitrary_input(self) -> None:
        """Hundreds of junk label values add only the bounded set of series."""
        m = Metrics(providers=PROVIDERS)
        exercise(m, random.Random(7), n=400)
        topics = len(m.topics) + 1
        bounds = {
            "provider": len(PROVIDERS) + 1,
            "message_type": len(MESSAGE_TYPES) + 1,
            "reason": len(known_reasons()) + 1,
            "ack_code": len(ACK_CODES) + 1,
            "topic": topics,
            "event_type": len(EVENT_TYPES) + 1,
            "rule": len(RULES) + 1,
            "partition": 6,
            "kind": len(OPS_ALERT_KINDS) + 1,
        }
        for name, fam in families(m).items():
            for sample in fam.samples:
                for label, _value in sample.labels.items():
                    if label == "le":
                        continue
                    assert label in bounds, (name, label)
            for label, bound in bounds.items():
                values = {s.labels[label] for s in fam.samples if label in s.labels}
                assert len(values) <= bound, (name, label, len(values))

    def test_series_count_has_a_ceiling(self) -> None:
        """The total number of carebus series is below a fixed ceiling whatever is sent."""
        m = Metrics(providers=PROVIDERS)
        exercise(m, random.Random(3), n=800)
        samples = sum(len(fam.samples) for fam in families(m).values())
        assert samples < 2500


class TestFolding:
    @pytest.fixture
    def m(self) -> Metrics:
        return Metrics(providers=PROVIDERS, topics=TopicNames("cb"))

    def test_provider_outside_the_region_folds_to_other(self, m: Metrics) -> None:
        """A provider the region does not name is counted as other."""
        assert m.provider_label("RX1") == "RX1"
        assert m.provider_label(" RX1 ") == "RX1"
        assert m.provider_label("NOT-IN-REGION") == OTHER
        assert m.provider_label("") == OTHER
        assert m.provider_label(None) == OTHER

    def test_nhs_number_never_becomes_a_label(self, m: Metrics) -> None:
        """An NHS number passed by mistake as a provider is folded away."""
        m.message_received("9434765919", "ADT")
        assert b"9434765919" not in m.render()
        value = m.registry.get_sample_value(
            "carebus_mllp_messages_received_total", {"provider": OTHER, "message_type": "ADT"}
        )
        assert value == 1.0

    def test_message_type_takes_msh9_1(self, m: Metrics) -> None:
        """ADT^A01 and adt count as ADT; an unknown type as other."""
        assert m.message_type_label("ADT^A01") == "ADT"
        assert m.message_type_label("adt") == "ADT"
        assert m.message_type_label("ZZZ^Z01") == OTHER
        assert m.message_type_label("") == OTHER

    def test_event_type_accepts_full_schema_names(self, m: Metrics) -> None:
        """carebus.events.Encounter counts as Encounter."""
        assert m.event_type_label("carebus.events.Encounter") == "Encounter"
        assert m.event_type_label("Nope") == OTHER

    def test_reason_comes_from_rejection_classes(self, m: Metrics) -> None:
        """Every MessageRejected reason is a label; free text is not."""
        assert m.reason_label("unparseable") == "unparseable"
        assert m.reason_label("no such reason here") == OTHER

    def test_reason_of_a_subclass_defined_later_is_kept(self, m: Metrics) -> None:
        """A MessageRejected subclass imported after start-up still labels by its reason."""

        class LateReason(MessageRejected):
            reason = "late-reason-for-test"

        assert m.reason_label("late-reason-for-test") == "late-reason-for-test"

    def test_topic_label_is_a_carebus_topic(self, m: Metrics) -> None:
        """Topics of this prefix (and region providers' alert topics) are kept; others fold."""
        assert m.topic_label("cb.events") == "cb.events"
        assert m.topic_label("cb.alerts.provider.RX1") == "cb.alerts.provider.RX1"
        assert m.topic_label("cb.alerts.provider.ELSEWHERE") == OTHER
        assert m.topic_label("carebus.events") == OTHER

    def test_rule_and_ack_code_fold(self, m: Metrics) -> None:
        """Unknown rule ids and ACK codes fold to other."""
        assert m.rule_label("death-notified") == "death-notified"
        assert m.rule_label("made-up") == OTHER
        assert m.ack_code_label("aa") == "AA"
        assert m.ack_code_label("XX") == OTHER


class TestRecording:
    def test_clock_behind_names_each_provider_and_the_one_holding_the_clock(self) -> None:
        """Providers behind get their seconds, the furthest is held_by 1; caught up goes to 0."""
        m = Metrics(providers=PROVIDERS)
        get = m.registry.get_sample_value
        m.set_clock_behind({"RX1": 120.0, "G0001": 5400.0, "ZZ-not-in-region": 30.0})
        assert get("carebus_worker_clock_behind_seconds", {"provider": "G0001"}) == 5400
        assert get("carebus_worker_clock_behind_seconds", {"provider": "RX1"}) == 120
        assert get("carebus_worker_clock_behind_seconds", {"provider": "other"}) == 30
        assert get("carebus_worker_clock_held_by", {"provider": "G0001"}) == 1
        assert get("carebus_worker_clock_held_by", {"provider": "RX1"}) == 0
        m.set_clock_behind({"RX1": 60.0})
        assert get("carebus_worker_clock_behind_seconds", {"provider": "G0001"}) == 0
        assert get("carebus_worker_clock_behind_seconds", {"provider": "other"}) == 0
        assert get("carebus_worker_clock_held_by", {"provider": "RX1"}) == 1
        assert get("carebus_worker_clock_held_by", {"provider": "G0001"}) == 0

    def test_counters_and_gauges_move(self) -> None:
        """Each call changes exactly the series it names."""
        m = Metrics(providers=PROVIDERS)
        get = m.registry.get_sample_value
        m.message_received("RX1", "ADT")
        m.message_received("RX1", "ADT")
        m.message_accepted("RX1", "ADT")
        m.dead_lettered("G0001", "unparseable")
        m.connection_opened()
        m.connection_opened()
        m.connection_closed()
        m.ack_sent("AA", 0.003)
        m.set_consumer_lag("carebus.events", 2, 17)
        m.set_deadlines_pending(4)
        pm = {"provider": "RX1", "message_type": "ADT"}
        assert get("carebus_mllp_messages_received_total", pm) == 2
        assert get("carebus_mllp_messages_accepted_total", pm) == 1
        assert get("carebus_mllp_messages_rejected_total", pm) is None
        assert get("carebus_deadletters_total", {"provider": "G0001", "reason": "unparseable"}) == 1
        assert get("carebus_mllp_open_connections") == 1
        assert get("carebus_mllp_connections_total") == 2
        assert get("carebus_mllp_ack_latency_seconds_count", {"ack_code": "AA"}) == 1
        assert (
            get("carebus_mllp_ack_latency_seconds_bucket", {"ack_code": "AA", "le": "0.005"}) == 1
        )
        assert (
            get("carebus_worker_consumer_lag", {"topic": "carebus.events", "partition": "2"}) == 17
        )
        assert get("carebus_worker_deadlines_pending") == 4
        assert (
            get("carebus_mllp_last_message_received_timestamp_seconds", {"provider": "RX1"}) or 0
        ) > 0

    def test_forgotten_partition_disappears(self) -> None:
        """A revoked partition's lag series is removed rather than left stale."""
        m = Metrics()
        m.set_consumer_lag("carebus.events", 1, 3)
        m.forget_partition("carebus.events", 1)
        m.forget_partition("carebus.events", 1)
        assert (
            m.registry.get_sample_value(
                "carebus_worker_consumer_lag", {"topic": "carebus.events", "partition": "1"}
            )
            is None
        )

    def test_instances_do_not_share_state(self) -> None:
        """Two Metrics objects (two processes, or two tests) count independently."""
        a, b = Metrics(), Metrics()
        a.alert_raised("death-notified")
        assert (
            b.registry.get_sample_value(
                "carebus_worker_alerts_raised_total", {"rule": "death-notified"}
            )
            is None
        )

    def test_process_metrics_are_optional(self) -> None:
        """process_metrics=True adds the standard process and python collectors."""
        names = set(families(Metrics(process_metrics=True)))
        assert "python_info" in names
        assert "python_info" not in set(families(Metrics()))


def carebus_families(m: Metrics) -> set[str]:
    """The carebus metric names in ``m``'s exposition (counters without ``_total``)."""
    return {name for name in families(m) if name.startswith("carebus_")}


def role_names(role: Role) -> set[str]:
    return {s.name.removesuffix("_total") for s in METRICS if role in s.roles}


class TestRoles:
    def test_listener_exposes_no_worker_or_feed_watch_metric(self) -> None:
        """The listener's exposition has its ingest metrics only, even after every update."""
        m = Metrics(providers=PROVIDERS, role="listener")
        exercise(m, random.Random(2), n=5)
        exposed = carebus_families(m)
        assert exposed == role_names("listener")
        assert not {n for n in exposed if n.startswith(("carebus_worker_", "carebus_feed_"))}
        assert "carebus_mllp_open_connections" in exposed
        assert b"carebus_worker_deadlines_pending" not in m.render()

    def test_worker_exposes_no_listener_metric(self) -> None:
        """The worker's exposition has its own metrics and produce errors, no MLLP series."""
        m = Metrics(providers=PROVIDERS, role="worker")
        exercise(m, random.Random(3), n=5)
        exposed = carebus_families(m)
        assert exposed == role_names("worker")
        assert not {n for n in exposed if n.startswith(("carebus_mllp_", "carebus_deadletters"))}
        assert "carebus_kafka_produce_errors" in exposed
        assert m.registry.get_sample_value("carebus_worker_deadlines_pending") == 3

    def test_dashboard_exposes_only_the_feed_watch(self) -> None:
        """The dashboard's exposition holds the silent-feed metrics and nothing else."""
        m = Metrics(providers=PROVIDERS, role="dashboard")
        exercise(m, random.Random(4), n=5)
        assert carebus_families(m) == {"carebus_feed_silent", "carebus_ops_alerts_raised"}

    def test_every_metric_belongs_to_a_process(self) -> None:
        """Each metric is exposed by at least one process; without a role, by all of them."""
        for spec in METRICS:
            assert spec.roles and spec.roles <= set(ROLES), spec.name
        assert carebus_families(Metrics()) == {s.name.removesuffix("_total") for s in METRICS}

    def test_an_unknown_role_is_refused(self) -> None:
        """A role that names no carebus process raises rather than exposing nothing."""
        with pytest.raises(ValueError, match="role"):
            Metrics(role="listner")  # type: ignore[arg-type]
