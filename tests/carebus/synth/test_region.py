"""Tests for carebus/synth/region.py: the synthetic region and its config file."""

from __future__ import annotations

from pathlib import Path

import yaml

from carebus.synth import REGION, SynthMessage, region_config, region_yaml
from connectors.hl7 import parse_message
from streams.region import load_region


class TestRegion:
    def test_has_every_kind_of_provider_a_region_needs(self) -> None:
        """Several trusts and practices, hospices, a community team and a council."""
        kinds = [p.kind for p in REGION.providers]
        assert kinds.count("hospital") >= 3
        assert kinds.count("gp") >= 10
        assert kinds.count("hospice") >= 2
        assert kinds.count("community") == 1
        assert kinds.count("council") == 1

    def test_codes_are_unique_and_names_say_example(self) -> None:
        """Provider codes do not repeat, and every name is marked as an example."""
        codes = [p.code for p in REGION.providers]
        assert len(codes) == len(set(codes))
        assert all("(example)" in p.name for p in REGION.providers)

    def test_every_practice_has_a_local_hospital_and_hospice(self) -> None:
        """Local services are providers of the right kind."""
        for practice in REGION.practices:
            assert REGION.local_hospital(practice).kind == "hospital"
            assert REGION.local_hospice(practice).kind == "hospice"


class TestRegionYaml:
    def test_loads_with_the_rule_engine_region_loader(self, tmp_path: Path) -> None:
        """The written YAML is a valid region config with every provider and code list."""
        path = tmp_path / "region.yaml"
        path.write_text(region_yaml(), encoding="utf-8")
        region = load_region(path)
        assert {code: p.kind for code, p in region.providers.items()} == {
            p.code: p.kind for p in REGION.providers
        }
        assert region.cancer_priorities == frozenset({"2WW"})
        assert region.outcome_document_types == frozenset({"CANCER-OUTCOME"})
        assert region.eol_register_codes == frozenset({"1403151000000103"})
        assert region.hospice_discharge_destinations == frozenset({"88"})
        assert region.emergency_admission_types == frozenset({"E"})
        assert region.retest_intervals_days["4548-4"] == 90

    def test_yaml_round_trips_to_the_config(self) -> None:
        """The YAML text says exactly what region_config returns."""
        assert yaml.safe_load(region_yaml()) == region_config()

    def test_covers_every_sender_of_the_feed(self, feed: list[SynthMessage]) -> None:
        """Every sending and referred-to facility in the feed is a provider of the region."""
        codes = {p.code for p in REGION.providers}
        facilities = set()
        for message in feed:
            if message.malformed is None:
                parsed = parse_message(message.raw)
                facilities.add(parsed.sending_facility)
                if parsed.message_type == "REF":
                    facilities.add(parsed.receiving_facility)
        assert facilities <= codes
        assert len(facilities) == len(codes)
