"""Generated feeds against the project's parser and translator, and what they cover."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from carebus.errors import MessageRejected
from carebus.synth import SynthMessage, hl7, nhs
from connectors.hl7 import Message, parse_message
from connectors.translate import Event, translate

RECEIVED = datetime(2026, 6, 1, tzinfo=UTC)
Translated = list[tuple[SynthMessage, Message, list[Event]]]


@pytest.fixture(scope="module")
def translated(feed: list[SynthMessage]) -> Translated:
    """Every well-formed message of the feed with its parse and its events."""
    out = []
    for message in feed:
        if message.malformed is None:
            parsed = parse_message(message.raw)
            out.append(
                (message, parsed, translate(parsed, raw=message.raw, received_time=RECEIVED))
            )
    return out


def _type(parsed: Message) -> str:
    return f"{parsed.message_type}^{parsed.trigger_event}"


class TestEveryMessage:
    def test_well_formed_messages_translate(self, translated: Translated) -> None:
        """Each message not broken on purpose gives at least one event."""
        assert all(events for _, _, events in translated)

    def test_malformed_messages_are_rejected(self, feed: list[SynthMessage]) -> None:
        """Each message broken on purpose is rejected by the parser or the translator."""
        broken = [m for m in feed if m.malformed]
        assert broken
        for message in broken:
            with pytest.raises(MessageRejected):
                translate(parse_message(message.raw), raw=message.raw, received_time=RECEIVED)

    def test_breakage_is_of_the_known_kinds(self, feed: list[SynthMessage]) -> None:
        """Messages are broken only in the documented ways, and in more than one."""
        kinds = {m.malformed for m in feed if m.malformed}
        assert kinds <= set(hl7.MALFORMED)
        assert len(kinds) >= 2

    def test_events_are_keyed_by_valid_nhs_numbers_mostly(self, translated: Translated) -> None:
        """Most events are keyed by a valid NHS number; a few by a local identifier."""
        keys = [event.key for _, _, events in translated for event in events]
        by_nhs = [k for k in keys if nhs.is_valid(k)]
        assert len(by_nhs) > 0.9 * len(keys)
        assert any(":" in k for k in keys)


class TestCoverage:
    def test_message_types(self, translated: Translated) -> None:
        """The feed has every message type the rules use, and the noise types."""
        types = Counter(_type(parsed) for _, parsed, _ in translated)
        expected = {
            "ADT^A01", "ADT^A03", "ADT^A04", "ADT^A08", "ADT^A28", "ADT^A40",
            "REF^I12", "SIU^S12", "SIU^S13", "SIU^S15", "SIU^S26",
            "ORM^O01", "OML^O21", "ORU^R01", "MDM^T02", "PPR^PC1",
        }  # fmt: skip
        assert expected <= set(types)

    def test_event_schemas(self, translated: Translated) -> None:
        """Every event family appears, deaths and merges included."""
        schemas = {
            event.schema.rsplit(".", 1)[-1] for _, _, events in translated for event in events
        }
        assert schemas == {
            "Encounter", "PatientDemographics", "PatientMerged", "Referral", "Appointment",
            "Order", "Result", "Document", "Problem", "PatientDied",
        }  # fmt: skip

    def test_rules_relevant_cases(self, translated: Translated) -> None:
        """2WW referrals, outcome letters, register entries, emergency admissions, hospice
        discharges, deaths of each kind, final results and unverified identities all occur."""
        seen: Counter[str] = Counter()
        for _, parsed, _ in translated:
            kind = _type(parsed)
            pid, pv1 = parsed.first("PID"), parsed.first("PV1")
            rf1, txa, prb, obr = (parsed.first(s) for s in ("RF1", "TXA", "PRB", "OBR"))
            if rf1 is not None and rf1.get(2) == "2WW":
                seen["2ww-referral"] += 1
            if txa is not None and txa.get(2) == "CANCER-OUTCOME":
                seen["outcome-letter"] += 1
            if prb is not None and prb.get(3) == "1403151000000103":
                seen["eol-register"] += 1
            if kind == "ADT^A01" and pv1 is not None and pv1.get(4) == "E":
                seen["emergency-admission"] += 1
            if kind == "ADT^A03" and pv1 is not None:
                seen[f"discharge-{pv1.get(37)}"] += 1
            if kind == "ADT^A01" and parsed.sending_facility.startswith("XHS"):
                seen["hospice-admission"] += 1
            if pid is not None and (pid.get(29) or pid.get(30) == "Y"):
                seen[f"death-{kind}"] += 1
            if obr is not None and kind == "ORU^R01":
                seen[f"result-{obr.get(25)}"] += 1
            if pid is not None and pid.get(32) in (hl7.NOT_TRACED, hl7.TRACE_REQUIRED):
                seen["unverified-identity"] += 1
        for case in (
            "2ww-referral", "outcome-letter", "eol-register", "emergency-admission",
            "discharge-19", "discharge-88", "discharge-79", "hospice-admission",
            "death-ADT^A08", "result-F", "result-P", "unverified-identity",
        ):  # fmt: skip
            assert seen[case] > 0, case
