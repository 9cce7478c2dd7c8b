"""Tests for streams/region.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from carebus.errors import ConfigError
from streams.region import load_region, parse_region

EXAMPLE_REGION = Path(__file__).resolve().parents[2].parent / "shared/spec/examples/region.yaml"


def _with(**extra: Any) -> dict[str, Any]:
    return {"providers": {"RX1": {"name": "H", "kind": "hospital"}}, **extra}


class TestLoadRegion:
    def test_loads_the_spec_example_region(self) -> None:
        """The worked examples' region file loads with the spec defaults for missing keys."""
        region = load_region(EXAMPLE_REGION)
        assert {c: p.kind for c, p in region.providers.items()} == {
            "RX1": "hospital",
            "G0001": "gp",
            "HSP01": "hospice",
        }
        assert region.cancer_priorities == {"2WW"}
        assert region.outcome_document_types == {"CANCER-OUTCOME"}
        assert region.eol_register_codes == {"1403151000000103"}
        assert region.hospice_discharge_destinations == {"88"}
        assert region.emergency_admission_types == {"E"}
        assert region.retest_intervals_days == {"4548-4": 90}

    def test_unreadable_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A missing file raises ConfigError naming the path."""
        with pytest.raises(ConfigError, match="cannot read region config"):
            load_region(tmp_path / "missing.yaml")

    def test_invalid_yaml_is_a_config_error(self, tmp_path: Path) -> None:
        """Broken YAML raises ConfigError with the line."""
        path = tmp_path / "region.yaml"
        path.write_text("providers: {RX1: [\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="not valid YAML"):
            load_region(path)

    def test_every_optional_key_can_be_set(self, tmp_path: Path) -> None:
        """All optional keys are read from the file, integers accepted as codes."""
        path = tmp_path / "region.yaml"
        path.write_text(
            "providers:\n  RX1: {kind: hospital}\n"
            "suspected_cancer: {priorities: [URGENT], outcome_document_types: [OUT]}\n"
            "eol_register_codes: [123]\nhospice_discharge_destinations: ['87', 88]\n"
            "emergency_admission_types: [E, A]\nretest_intervals_days: {LDL: 30}\n",
            encoding="utf-8",
        )
        region = load_region(path)
        assert region.cancer_priorities == {"URGENT"}
        assert region.outcome_document_types == {"OUT"}
        assert region.eol_register_codes == {"123"}
        assert region.hospice_discharge_destinations == {"87", "88"}
        assert region.emergency_admission_types == {"E", "A"}
        assert region.retest_intervals_days == {"LDL": 30}
        assert region.providers["RX1"].name == "RX1"


class TestValidation:
    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ([], "must be a mapping"),
            ({}, "'providers' is required"),
            ({"providers": {}}, "non-empty mapping"),
            ({"providers": {"RX1": {"kind": "hospital"}}, "colour": 1}, "unknown key.*colour"),
            ({"providers": {"RX1": "hospital"}}, "providers.RX1: must be a mapping"),
            ({"providers": {"RX1": {"name": "H"}}}, r"providers.RX1.kind is required"),
            ({"providers": {"RX1": {"kind": "pharmacy"}}}, r"providers.RX1.kind must be one of"),
            ({"providers": {"RX1": {"kind": "gp", "size": 3}}}, "providers.RX1: unknown key"),
            ({"providers": {"RX1": {"kind": "gp", "name": ""}}}, "providers.RX1.name"),
            (_with(eol_register_codes="123"), "'eol_register_codes' must be a list"),
            (_with(emergency_admission_types=[1.5]), "'emergency_admission_types' has 1.5"),
            (_with(suspected_cancer=["2WW"]), "'suspected_cancer' must be a mapping"),
            (_with(suspected_cancer={"priority": ["2WW"]}), "suspected_cancer.*priority"),
            (
                _with(suspected_cancer={"priorities": "2WW"}),
                "'suspected_cancer.priorities' must be a list",
            ),
            (_with(retest_intervals_days=[1]), "'retest_intervals_days' must be a mapping"),
            (_with(retest_intervals_days={"X": 0}), "retest_intervals_days.X must be a positive"),
            (_with(retest_intervals_days={"X": "9"}), "retest_intervals_days.X must be a positive"),
            (
                _with(retest_intervals_days={"X": True}),
                "retest_intervals_days.X must be a positive",
            ),
            (_with(feed_idle_minutes=0), "'feed_idle_minutes' must be a positive"),
            (_with(feed_idle_minutes="5m"), "'feed_idle_minutes' must be a positive"),
        ],
    )
    def test_bad_config_names_the_key(self, data: Any, message: str) -> None:
        """Each kind of mistake raises ConfigError whose message names the offending key."""
        with pytest.raises(ConfigError, match=message):
            parse_region(data)

    def test_unknown_providers_are_of_kind_unknown(self) -> None:
        """A provider missing from the config is processed with kind unknown."""
        assert parse_region(_with()).kind("ZZZ99") == "unknown"

    def test_null_optional_keys_take_the_defaults(self) -> None:
        """An optional key written but left empty means the spec default."""
        region = parse_region(_with(eol_register_codes=None, suspected_cancer=None))
        assert region.eol_register_codes == {"1403151000000103"}
        assert region.cancer_priorities == {"2WW"}

    def test_ops_feed_expectation_is_accepted_beside_the_rules_keys(self) -> None:
        """A provider's ``expected_interval`` (read by the feed watch) is not an error."""
        region = parse_region(
            {"providers": {"RX1": {"name": "H", "kind": "hospital", "expected_interval": "15m"}}}
        )
        assert region.kind("RX1") == "hospital"


class TestFeedIdleMinutes:
    def test_defaults_to_five_minutes(self) -> None:
        """Without feed_idle_minutes a provider stops holding the clock after 5 minutes."""
        assert parse_region(_with()).feed_idle_minutes == 5.0

    def test_can_be_set(self) -> None:
        """feed_idle_minutes is read from the region config, whole or fractional."""
        assert parse_region(_with(feed_idle_minutes=30)).feed_idle_minutes == 30.0
        assert parse_region(_with(feed_idle_minutes=0.5)).feed_idle_minutes == 0.5
