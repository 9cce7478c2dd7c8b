"""A generated feed through ``carebus simulate``: it exercises the coordination rules."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from carebus.cli import main
from streams.rules import RULES


@pytest.fixture(scope="module")
def alerts(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    """The alerts ``carebus simulate`` raises over a generated feed of 300 patients."""
    tmp = tmp_path_factory.mktemp("synth")
    feed, region = tmp / "feed.hl7", tmp / "region.yaml"
    capture = pytest.MonkeyPatch()
    argv = ["generate", "--seed", "5", "--patients", "300", "--out", str(feed)]
    assert main([*argv, "--region-out", str(region)]) == 0
    out = tmp / "alerts.jsonl"
    with out.open("w") as handle:
        capture.setattr("sys.stdout", handle)
        try:
            status = main(["simulate", str(feed), "--config", str(region)])
        finally:
            capture.undo()
    assert status == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


class TestGeneratedFeedRaisesAlerts:
    def test_every_rule_fires(self, alerts: list[dict[str, object]]) -> None:
        """Each of the fourteen rules raises at least one alert on the generated feed."""
        fired = Counter(str(a["rule"]) for a in alerts)
        assert set(fired) == {rule.id for rule in RULES}

    def test_recipients_are_region_providers(self, alerts: list[dict[str, object]]) -> None:
        """Alerts go to providers of the synthetic region."""
        from carebus.synth import REGION

        codes = {p.code for p in REGION.providers}
        for alert in alerts:
            recipients = alert["recipients"]
            assert isinstance(recipients, list)
            assert recipients
            assert set(recipients) <= codes

    def test_rules_fire_in_plausible_proportions(self, alerts: list[dict[str, object]]) -> None:
        """Most two-week-wait pathways meet their deadlines: breaches are a minority."""
        fired = Counter(str(a["rule"]) for a in alerts)
        assert fired["faster-diagnosis-breach"] < fired["faster-diagnosis-at-risk"]
        assert fired["hospice-handoff-missed"] < fired["eol-discharge"]
