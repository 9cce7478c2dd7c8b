"""Conformance of connectors/hl7 (framing and parsing) on the shared third-party corpus."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from connectors.hl7 import iter_feed, parse_message
from tests.connectors.hl7.samples import CORPUS

FILES = sorted(CORPUS.glob("*.hl7"))

#: Pinned so that the corpus, the framing or the parser cannot silently lose messages.
EXPECTED_FILES = 139
EXPECTED_TYPES = {
    "ADT": 59,
    "BAR": 6,
    "DFT": 4,
    "MDM": 13,
    "OMG": 2,
    "OML": 4,
    "ORM": 8,
    "ORU": 5,
    "OUL": 6,
    "PPR": 3,
    "RDE": 4,
    "RDS": 2,
    "REF": 4,
    "SIU": 15,
    "VXU": 4,
}
EXPECTED_VERSIONS = {"2.3": 6, "2.3.1": 3, "2.4": 1, "2.5": 2, "2.5.1": 7, "2.6": 8, "2.8": 112}
EXPECTED_SEGMENTS = 2252


class TestCorpus:
    def test_corpus_is_where_expected(self) -> None:
        """The corpus is read in place from ../shared and has every file."""
        assert len(FILES) == EXPECTED_FILES

    @pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
    def test_every_file_frames_and_parses(self, path: Path) -> None:
        """Each file is one message that parses, with a type, trigger and control id."""
        items = list(iter_feed(path.read_bytes()))
        assert [item.position for item in items] == [1]
        message = parse_message(items[0].raw)
        assert message.message_type
        assert message.trigger_event
        assert message.control_id
        assert message.names[0] == "MSH"
        assert all(len(name) == 3 for name in message.names)

    def test_pinned_totals(self) -> None:
        """Message types, versions and segment counts across the corpus are pinned."""
        types: Counter[str] = Counter()
        versions: Counter[str] = Counter()
        segments = 0
        for path in FILES:
            for item in iter_feed(path.read_bytes()):
                message = parse_message(item.raw)
                types[message.message_type] += 1
                versions[message.version] += 1
                segments += len(message.segments)
        assert dict(types) == EXPECTED_TYPES
        assert dict(versions) == EXPECTED_VERSIONS
        assert segments == EXPECTED_SEGMENTS

    def test_msh_inside_a_field_does_not_split_a_message(self) -> None:
        """ADT04-23 has 'MSH' as a field value mid-line; it stays one message."""
        data = (CORPUS / "ADT04-23.hl7").read_bytes()
        assert data.count(b"MSH|") == 3
        items = list(iter_feed(data))
        assert len(items) == 1
        assert items[0].offset == 3  # after the byte-order mark

    def test_corpus_concatenated_gives_every_message(self) -> None:
        """All files concatenated (byte-order marks included) split back into every message."""
        feed = b"\n".join(path.read_bytes() for path in FILES)
        ids = [parse_message(item.raw).control_id for item in iter_feed(feed)]
        assert len(ids) == EXPECTED_FILES
        expected = [parse_message(path.read_bytes()).control_id for path in FILES]
        assert ids == expected
