"""Tests for streams/control.py: control messages and the partitioner."""

from __future__ import annotations

import pytest
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from streams.control import (
    BadControlMessage,
    Forwarded,
    MergeRequest,
    StateMove,
    Tick,
    decode,
    encode,
    partition_for,
)


class TestCodec:
    @pytest.mark.parametrize(
        "message",
        [
            Tick(1_771_000_000_000_000),
            MergeRequest("RX1:MRN1", "9434765919"),
            StateMove("RX1:MRN1", "9434765919", {"v": 1, "key": "RX1:MRN1"}),
            StateMove("RX1:MRN1", "9434765919", None),
            Forwarded("9434765919", b"\xc3\x01\x00binary", 2),
        ],
    )
    def test_round_trip(self, message: object) -> None:
        """Every control message decodes to what was encoded."""
        assert decode(encode(message)) == message  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "data", [b"", b"not json", b'{"type": "nope"}', b'{"type": "tick"}', b"[1]"]
    )
    def test_rejects_what_is_not_a_control_message(self, data: bytes) -> None:
        """Garbage raises BadControlMessage, never another exception."""
        with pytest.raises(BadControlMessage):
            decode(data)


class TestPartitionFor:
    @pytest.mark.parametrize("key", ["9434765919", "RX1:MRN0101", "NHS:123", "ä-key"])
    def test_matches_the_java_default_partitioner(self, key: str) -> None:
        """The partition is murmur2 as kafka-python (Java-compatible) computes it."""
        expected = (kafka_python_murmur2(key.encode()) & 0x7FFFFFFF) % 6
        assert partition_for(key, 6) == expected
