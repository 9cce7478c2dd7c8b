"""Parsing is linear in the message size, proved by counting work, never by timing.

Hostile input (a frame of many very short or continuation lines, start blocks without
end blocks, batch trailers without carriage returns, a field of many repetitions)
must not make the listener do quadratic work. Each test gives a pathological input
and counts the work of the step that used to be quadratic through a hook (a string
or bytes subclass, a spy segment) that fails as soon as the count passes a budget
proportional to the input. The modules are loaded from source for these tests, so
that the hooks see every operation even where the build compiles the modules.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from carebus.errors import Unparseable
from connectors.hl7 import parse_message
from connectors.hl7.message import Segment

ROOT = Path(__file__).resolve().parents[3]
MIB = 1 << 20


def interpreted(name: str) -> ModuleType:
    """Module ``name`` loaded from its source file, never from a compiled extension."""
    path = ROOT / (name.replace(".", "/") + ".py")
    spec = importlib.util.spec_from_file_location(f"{name}__source", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


class Budget:
    """Counts units of work; fails the test as soon as they pass ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, units: int) -> None:
        self.used += units
        if self.used > self.limit:
            raise AssertionError(f"more than {self.limit} units of work: not linear")


class Piece(str):
    """A line of text that reports every copy made of it by ``+``, ``%`` or formatting."""

    budget: Budget

    def _copied(self) -> None:
        self.budget.spend(len(self) + 1)

    def __add__(self, other: Any) -> str:
        self._copied()
        return str(self) + other

    def __radd__(self, other: Any) -> str:
        self._copied()
        return other + str(self)

    def __format__(self, spec: str) -> str:
        self._copied()
        return format(str(self), spec)

    def __mod__(self, other: Any) -> str:
        self._copied()
        return str(self) % other


class Scanned(bytes):
    """Bytes that count how many bytes each ``find`` and ``index`` passes over."""

    budget: Budget

    def find(self, sub: Any, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        low = 0 if start is None else start
        high = len(self) if end is None else end
        found = super().find(sub, low, high)
        self.budget.spend((high if found < 0 else found + 1) - low)
        return found

    def index(self, sub: Any, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        found = self.find(sub, start, end)
        if found < 0:
            raise ValueError("subsection not found")
        return found


class TestSegments:
    def test_continuation_lines_are_joined_once(self) -> None:
        """4 MiB of one-byte continuation lines: each line is copied once, by one join."""
        parse = interpreted("connectors.hl7.parse")
        Piece.budget = budget = Budget(0)  # no piece may be concatenated at all
        pieces = [Piece("MSH|^~\\&|A"), Piece("OBX|1|TX|||x")] + [Piece("a")] * (2 * MIB)
        names, lines = parse._segments(pieces, "|")
        assert names == ["MSH", "OBX"]
        assert len(lines[1]) == len("OBX|1|TX|||x") + 2 * (2 * MIB)
        assert lines[1].count("\n") == 2 * MIB
        assert budget.used == 0

    def test_short_lines_and_blank_lines_are_linear(self) -> None:
        """4 MiB of very short segments and blank lines parse, one segment a line."""
        body = "\r".join(["ZZ1|a"] * (MIB // 2) + [""] * MIB)
        message = parse_message(("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|C1|P|2.5\r" + body).encode())
        assert len(message.names) == 1 + MIB // 2


class TestFeedFraming:
    @pytest.mark.parametrize(
        "data",
        [
            pytest.param(b"\x0b" * (MIB // 4) + b"\x1c", id="start-blocks-then-one-end"),
            pytest.param(b"BTS|1\n" * (MIB // 24), id="batch-trailers-without-cr"),
            pytest.param(b"\x0b" + b"MSH|^~\\&|A\n" * (MIB // 44) + b"\x1c\r", id="lf-frame"),
            pytest.param(b"FHS|^~\\&|A\nBHS|^~\\&|B\n" * (MIB // 88), id="batch-headers"),
        ],
    )
    def test_every_byte_is_searched_a_bounded_number_of_times(self, data: bytes) -> None:
        """iter_feed's searches pass over each byte of a pathological feed a bounded number of
        times (one search per marker kind, block character and line end), not once per item."""
        framing = interpreted("connectors.hl7.framing")
        scanned = Scanned(data)
        Scanned.budget = budget = Budget(12 * len(data))
        items = list(framing.iter_feed(scanned))
        assert budget.used <= budget.limit
        assert sum(len(item.raw) for item in items) <= len(data)


class SpySegment:
    """A segment that counts the characters of OBX-5 split by each question asked of it."""

    def __init__(self, segment: Segment, budget: Budget) -> None:
        self._segment = segment
        self._budget = budget
        self._size = len(segment.raw(5))

    def raw(self, field: int) -> str:
        return self._segment.raw(field)

    def repetitions(self, field: int) -> int:
        self._budget.spend(self._size)
        return self._segment.repetitions(field)

    def components(self, field: int, repetition: int = 1) -> list[str]:
        self._budget.spend(self._size)
        return self._segment.components(field, repetition)

    def all_components(self, field: int) -> list[list[str]]:
        self._budget.spend(self._size)
        return self._segment.all_components(field)


class TestRepetitions:
    def test_observation_value_splits_obx5_once(self) -> None:
        """An OBX-5 of 4 Mi repetitions is split a bounded number of times, not once each."""
        raw = "MSH|^~\\&|A|B|C|D|20260101||ORU^R01|C1|P|2.5\rOBX|1|TX|||" + "a^b^~" * MIB
        obx = parse_message(raw).first("OBX")
        assert obx is not None
        results = interpreted("connectors.translate.results")  # takes the spy
        budget = Budget(3 * len(obx.raw(5)))
        value = results.observation_value(SpySegment(obx, budget))
        assert value is not None
        assert value.count("~") == MIB
        assert value.startswith("a^b~a^b~")

    def test_all_components_is_components_of_every_repetition(self) -> None:
        """all_components gives what components gives for each repetition, escapes resolved."""
        raw = "MSH|^~\\&|A|B|C|D|20260101||ORU^R01|C1|P|2.5\rOBX|1|TX|||a^b\\F\\&s~~c^^~\\T\\"
        obx = parse_message(raw).first("OBX")
        assert obx is not None
        expected = [obx.components(5, r) for r in range(1, obx.repetitions(5) + 1)]
        assert obx.all_components(5) == expected == [["a", "b|&s"], [], ["c", "", ""], ["&"]]
        assert obx.all_components(6) == []
        assert parse_message(raw).msh.all_components(2) == [["^~\\&"]]


class TestRejectionsStayLinear:
    def test_unparseable_pathological_input_is_rejected(self) -> None:
        """4 MiB of start blocks inside a message is rejected as Unparseable."""
        with pytest.raises(Unparseable):
            parse_message(b"MSH|^~\\&|A\r" + b"\x0b" * (4 * MIB))
