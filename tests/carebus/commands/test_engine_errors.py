"""Tests for carebus/commands/engine_errors.py (the parts that need no broker)."""

from __future__ import annotations

import pytest

from carebus.cli import build_parser
from carebus.commands.engine_errors import Record, _positions, summary
from carebus.errors import ConfigError
from streams.engine_errors import EngineFailure, failure_record


class TestArguments:
    def test_replay_needs_a_selection(self) -> None:
        """``replay`` takes --all, --rule or --at, and refuses none."""
        parser = build_parser()
        assert parser.parse_args(["engine-errors", "replay", "--all"]).all
        args = parser.parse_args(["engine-errors", "replay", "--at", "0:4", "--at", "1:2"])
        assert _positions(args.at) == {(0, 4), (1, 2)}
        with pytest.raises(SystemExit):
            parser.parse_args(["engine-errors", "replay"])

    def test_bad_position_is_a_usage_error(self) -> None:
        """``--at`` must be PARTITION:OFFSET."""
        with pytest.raises(ConfigError, match="PARTITION:OFFSET"):
            _positions(["3"])


class TestSummary:
    def test_list_shows_place_and_error_never_key_or_value(self) -> None:
        """A listed record has its place and error headers, not the patient key or the event."""
        failure = EngineFailure(
            "event", "repeated-test", "builtins.KeyError", None, 1, 8, "e", "9434797373", b"avro"
        )
        key, value, headers = failure_record(failure, source_topic="p.events", at_ms=5)
        shown = summary(Record(1, 3, key, value, headers))
        assert shown["partition"] == 1 and shown["offset"] == 3
        assert (shown["source_topic"], shown["source_partition"], shown["source_offset"]) == (
            "p.events",
            "1",
            "8",
        )
        assert shown["rule"] == "repeated-test" and shown["stage"] == "event"
        assert "9434797373" not in str(shown) and "avro" not in str(shown)
