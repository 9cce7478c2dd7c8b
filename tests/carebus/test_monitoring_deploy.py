"""Structural checks of deploy/prometheus/alerts.yml and deploy/grafana/carebus-dashboard.json.

They must only use metrics carebus.metrics defines (so a rename breaks a test, not
an on-call night), and be well-formed for Prometheus and Grafana.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from carebus.metrics import METRICS

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "carebus-dashboard.json"
METRIC_REF = re.compile(r"\b(carebus_[a-z0-9_]+)")
#: Prometheus' label-name and duration syntax.
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")


def series_names() -> set[str]:
    """Every series name a query may use: counters' _total, histograms' parts."""
    names: set[str] = set()
    for spec in METRICS:
        names.add(spec.name)
        if spec.kind == "histogram":
            names |= {f"{spec.name}_bucket", f"{spec.name}_count", f"{spec.name}_sum"}
    return names


def balanced(expr: str) -> bool:
    depth = {"(": 0, "{": 0, "[": 0}
    pairs = {")": "(", "}": "{", "]": "["}
    for ch in re.sub(r'"[^"]*"', "", expr):
        if ch in depth:
            depth[ch] += 1
        elif ch in pairs:
            depth[pairs[ch]] -= 1
            if depth[pairs[ch]] < 0:
                return False
    return all(v == 0 for v in depth.values())


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert set(data) == {"groups"}
    return [rule for group in data["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


class TestPrometheusRules:
    def test_groups_are_named_uniquely_and_hold_rules(self) -> None:
        """Each group has a unique name and a non-empty rules list."""
        groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
        names = [g["name"] for g in groups]
        assert len(names) == len(set(names))
        assert all(g["rules"] for g in groups)

    def test_each_rule_is_a_complete_alert(self, rules: list[dict[str, Any]]) -> None:
        """Every rule has a CamelCase alert name, an expr, a severity and a summary."""
        assert len(rules) >= 8
        alerts = [r["alert"] for r in rules]
        assert len(alerts) == len(set(alerts))
        for rule in rules:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"Carebus[A-Z][A-Za-z0-9]+", rule["alert"])
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"]
            assert all(LABEL_NAME.match(k) for k in rule["labels"])
            if "for" in rule:
                assert DURATION.match(rule["for"]), rule["for"]

    def test_exprs_use_only_defined_metrics(self, rules: list[dict[str, Any]]) -> None:
        """Every carebus_* series an expression names is defined in carebus.metrics."""
        known = series_names()
        for rule in rules:
            expr = str(rule["expr"])
            assert balanced(expr), rule["alert"]
            for name in METRIC_REF.findall(expr):
                assert name in known, (rule["alert"], name)

    def test_label_matchers_use_labels_the_metric_has(self, rules: list[dict[str, Any]]) -> None:
        """A selector such as metric{provider=...} only matches on labels that metric has."""
        labels = {s.name: set(s.labels) | {"le", "job", "instance"} for s in METRICS}
        for spec in METRICS:
            if spec.kind == "histogram":
                for part in ("_bucket", "_count", "_sum"):
                    labels[spec.name + part] = labels[spec.name]
        for rule in rules:
            for name, matchers in re.findall(r"(carebus_[a-z0-9_]+)\{([^}]*)\}", rule["expr"]):
                for label in re.findall(r"([a-z_]+)\s*[=!~]", matchers):
                    assert label in labels[name], (rule["alert"], name, label)

    def test_the_key_failures_have_alerts(self, rules: list[dict[str, Any]]) -> None:
        """Silent feeds, produce errors, worker lag and a down process are covered."""
        used = " ".join(str(r["expr"]) for r in rules)
        for metric in (
            "carebus_feed_silent",
            "carebus_kafka_produce_errors_total",
            "carebus_worker_consumer_lag",
            "carebus_mllp_ack_latency_seconds_bucket",
            "carebus_deadletters_total",
        ):
            assert metric in used, metric
        assert "up{" in used


class TestGrafanaDashboard:
    def test_is_an_importable_dashboard(self, dashboard: dict[str, Any]) -> None:
        """Title, uid, schemaVersion, panels and a Prometheus datasource input are present."""
        assert dashboard["title"]
        assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
        assert isinstance(dashboard["schemaVersion"], int)
        assert dashboard["schemaVersion"] >= 30
        assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        assert {"DS_PROMETHEUS", "provider"} <= variables

    def test_panels_have_unique_ids_and_fit_the_grid(self, dashboard: dict[str, Any]) -> None:
        """Panel ids are unique and every gridPos lies within Grafana's 24 columns."""
        panels = dashboard["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids))
        for p in panels:
            pos = p["gridPos"]
            assert pos["w"] > 0
            assert pos["h"] > 0
            assert pos["x"] >= 0
            assert pos["x"] + pos["w"] <= 24
            assert p["type"] in {"row", "timeseries", "stat", "table", "gauge", "bargauge"}

    def test_panels_do_not_overlap(self, dashboard: dict[str, Any]) -> None:
        """No two panels occupy the same grid cell."""
        taken: set[tuple[int, int]] = set()
        for p in dashboard["panels"]:
            pos = p["gridPos"]
            cells = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not taken & cells, p["title"]
            taken |= cells

    def test_queries_use_only_defined_metrics(self, dashboard: dict[str, Any]) -> None:
        """Every target's expr is balanced and names only carebus.metrics series."""
        known = series_names()
        for p in dashboard["panels"]:
            if p["type"] == "row":
                continue
            assert p["targets"], p["title"]
            ref_ids = [t["refId"] for t in p["targets"]]
            assert len(ref_ids) == len(set(ref_ids))
            for t in p["targets"]:
                assert balanced(t["expr"]), p["title"]
                names = METRIC_REF.findall(t["expr"])
                assert names, p["title"]
                assert set(names) <= known, (p["title"], names)

    def test_every_metric_appears_on_the_dashboard(self, dashboard: dict[str, Any]) -> None:
        """Each metric carebus defines is charted by at least one panel."""
        used = " ".join(
            t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]
        )
        for spec in METRICS:
            assert spec.name in used, spec.name
