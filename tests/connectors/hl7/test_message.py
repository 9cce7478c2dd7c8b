"""Tests for connectors/hl7/message.py: Message and Segment access."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.hl7 import Layout, Message, Segment, parse_message
from tests.connectors.hl7.samples import ADT_A01_251


@pytest.fixture
def message() -> Message:
    return parse_message(ADT_A01_251)


@pytest.fixture
def pid(message: Message) -> Segment:
    segment = message.first("PID")
    assert segment is not None
    return segment


class TestSegmentGet:
    def test_components_are_1_based(self, pid: Segment) -> None:
        """get(field, component) counts from 1, like PID-5.2."""
        assert pid.get(5) == "DOE"
        assert pid.get(5, 2) == "JANE"
        assert pid.get(5, 5) == "MS"

    def test_repetitions(self, pid: Segment) -> None:
        """repetition picks one repetition of a repeating field."""
        assert pid.repetitions(3) == 2
        assert pid.get(3, repetition=1) == "9434765919"
        assert pid.get(3, 5, repetition=2) == "MR"
        assert pid.get(3, 4, repetition=2) == "RXX01"
        assert pid.get(3, repetition=3) == ""

    def test_subcomponents(self, message: Message) -> None:
        """subcomponent picks one sub-component of a component."""
        pv1 = message.first("PV1")
        assert pv1 is not None
        assert pv1.get(3, 4) == "RXX01"
        assert pv1.get(3, 4, 2) == "1.2.3"
        assert pv1.get(3, 4, 3) == "ISO"
        assert pv1.get(3, 4, 4) == ""
        assert pv1.get(3, 1, 2) == ""

    def test_absent_positions_are_empty(self, pid: Segment) -> None:
        """Positions beyond what the segment holds give an empty string."""
        assert pid.get(99) == ""
        assert pid.get(2) == ""
        assert pid.get(7, 2) == ""
        assert pid.get(7, repetition=2) == ""

    def test_positions_below_1_are_an_error(self, pid: Segment) -> None:
        """Field and component numbers start at 1."""
        with pytest.raises(ValueError):
            pid.get(0)
        with pytest.raises(ValueError):
            pid.get(3, 0)
        with pytest.raises(ValueError):
            pid.raw(0)

    def test_values_are_unescaped(self) -> None:
        """get returns values with escape sequences resolved."""
        message = parse_message("MSH|^~\\&|A|B|C|D|1||ADT^A08|1|P|2.4\rNTE|1||a\\T\\b\\S\\c^x")
        nte = message.first("NTE")
        assert nte is not None
        assert nte.get(3) == "a&b^c"
        assert nte.get(3, 2) == "x"

    def test_explicit_null_is_kept(self) -> None:
        """An HL7 explicit null is returned as the two characters ``""``."""
        message = parse_message('MSH|^~\\&|A|B|C|D|1||ADT^A08|1|P|2.4\rPID|1||X||""')
        assert message.segments[1].get(5) == '""'


class TestSegmentOther:
    def test_raw_is_the_field_as_received(self, pid: Segment) -> None:
        """raw gives every repetition, escaped."""
        assert pid.raw(3) == "9434765919^^^NHS^NH~H123456^^^RXX01^MR"
        assert pid.raw(50) == ""

    def test_components(self, pid: Segment, message: Message) -> None:
        """components lists the components of one repetition."""
        assert pid.components(5) == ["DOE", "JANE", "Q", "", "MS"]
        assert pid.components(3, 2) == ["H123456", "", "", "RXX01", "MR"]
        assert pid.components(3, 3) == []
        assert pid.components(40) == []
        pv1 = message.first("PV1")
        assert pv1 is not None
        assert pv1.components(3)[3] == "RXX01&1.2.3&ISO"

    def test_components_are_unescaped(self) -> None:
        """components resolves escape sequences in each component."""
        message = parse_message("MSH|^~\\&|A|B|C|D|1||ADT^A08|1|P|2.4\rNTE|1||a\\F\\b^c\\R\\d")
        assert message.segments[1].components(3) == ["a|b", "c~d"]

    def test_field_count(self, pid: Segment, message: Message) -> None:
        """field_count is the number of the last field present."""
        assert pid.field_count == 32
        assert pid.get(32) == "01"
        assert message.msh.field_count == 12

    def test_repr_has_no_content(self, pid: Segment, message: Message) -> None:
        """repr shows names and counts, never field values."""
        assert "DOE" not in repr(pid)
        assert "9434765919" not in repr(pid)
        assert "DOE" not in repr(message)
        assert "CTRL-251" in repr(message)


#: Repetitions, sub-components, escapes, an HL7 null, a custom encoding and a segment
#: with none of those (read by the component separator alone).
MIXED = "\r".join(
    [
        "MSH|^~\\&|APP^1.2&ISO|FAC|||20260209||ADT^A08^ADT_A01|C1|P|2.4",
        'PID|1||A1^^^NHS&2.16&ISO^NH~B2^^^RX1^MR||DOE\\T\\SON^JANE^^^MS||""|F|||'
        "1 HIGH ST\\S\\X^^LEEDS~2 LOW RD",
        "PV1|1|I|WARD7^BAY2^BED3^RX1||||||||||||||||V1",
    ]
)
CUSTOM = "MSH|#!*$|A|B|C|D|1||ADT#A08|1|P|2.4\rPID|1||X1#Y$Z!X2#W|*F*|a#b$c"


class TestSegmentBulkReads:
    @pytest.mark.parametrize("text", [ADT_A01_251, MIXED, CUSTOM])
    def test_first_values_is_get_of_each_field(self, text: str) -> None:
        """first_values gives get(field) for every field asked, in order, absent ones empty."""
        for segment in parse_message(text).segments:
            fields = list(range(1, segment.field_count + 3))
            expected = [segment.get(field) for field in fields]
            assert segment.first_values(*fields) == expected
            assert segment.first_values(*reversed(fields)) == expected[::-1]

    @pytest.mark.parametrize("text", [ADT_A01_251, MIXED, CUSTOM])
    def test_component_values_is_get_of_each_component(self, text: str) -> None:
        """component_values gives get(field, c, 1, repetition) for c in 1..count."""
        for segment in parse_message(text).segments:
            for field in range(1, segment.field_count + 2):
                for repetition in (1, 2, 3):
                    expected = [segment.get(field, c, 1, repetition) for c in range(1, 8)]
                    assert segment.component_values(field, 7, repetition) == expected
                    assert segment.component_values(field, 2, repetition) == expected[:2]

    @pytest.mark.parametrize("text", [ADT_A01_251, MIXED, CUSTOM])
    def test_repetition_values_is_component_values_of_each_repetition(self, text: str) -> None:
        """repetition_values gives component_values(field, count, r) for every repetition."""
        for segment in parse_message(text).segments:
            for field in range(1, segment.field_count + 2):
                for count in (1, 5):
                    expected = [
                        segment.component_values(field, count, repetition)
                        for repetition in range(1, segment.repetitions(field) + 1)
                    ]
                    assert segment.repetition_values(field, count) == expected

    def test_segment_knows_its_encoding(self) -> None:
        """A segment gives the delimiters of its message."""
        message = parse_message(CUSTOM)
        assert message.segments[1].encoding == message.encoding
        assert message.encoding.component == "#"

    def test_bulk_reads_resolve_escapes_and_sub_components(self) -> None:
        """Values are unescaped first sub-components, HL7 nulls kept as the two quotes."""
        pid = parse_message(MIXED).segments[1]
        assert pid.first_values(3, 5, 7, 11) == ["A1", "DOE&SON", '""', "1 HIGH ST^X"]
        assert pid.component_values(3, 5) == ["A1", "", "", "NHS", "NH"]
        assert pid.component_values(3, 5, 2) == ["B2", "", "", "RX1", "MR"]
        assert pid.component_values(11, 3, 2) == ["2 LOW RD", "", ""]

    def test_bulk_reads_reject_positions_below_1(self, pid: Segment) -> None:
        """Field and repetition numbers start at 1, as in get."""
        with pytest.raises(ValueError):
            pid.first_values(3, 0)
        with pytest.raises(ValueError):
            pid.component_values(0, 2)
        with pytest.raises(ValueError):
            pid.component_values(3, 2, 0)
        with pytest.raises(ValueError):
            pid.repetition_values(0, 2)


def _expected_read(segment: Segment, layout: Layout) -> list[str]:
    """What Segment.read is defined to give, from first_values and component_values."""
    values = segment.first_values(*layout.fields)
    for field, count in layout.components:
        values += segment.component_values(field, count)
    if layout.null_as_empty:
        values = ["" if value == '""' else value for value in values]
    return values


#: Field values made of delimiters (of either encoding), escapes, nulls and text.
_VALUES = st.lists(
    st.sampled_from(["a", "B1", "^", "~", "&", "\\", "\\F\\", "\\X41\\", '""', "#", "$", "!"]),
    max_size=6,
).map("".join)
_LAYOUTS = st.builds(
    Layout,
    st.lists(st.integers(1, 14), max_size=8).map(tuple),
    st.lists(st.tuples(st.integers(1, 14), st.integers(1, 6)), max_size=3).map(tuple),
    null_as_empty=st.booleans(),
)


class TestSegmentRead:
    @pytest.mark.parametrize("text", [ADT_A01_251, MIXED, CUSTOM])
    @pytest.mark.parametrize("null_as_empty", [False, True])
    def test_read_is_first_values_then_component_values(
        self, text: str, null_as_empty: bool
    ) -> None:
        """read gives first_values of the fields, then component_values of each pair."""
        layouts = [
            Layout((1, 2, 3, 4, 5, 7, 9, 11, 40), ((3, 5), (5, 3), (9, 2), (11, 6), (40, 2))),
            Layout((3, 4), ((1, 2), (2, 3)), null_as_empty=null_as_empty),
            Layout((), ((3, 1),), null_as_empty=null_as_empty),
        ]
        for segment in parse_message(text).segments:
            for layout in layouts:
                assert segment.read(layout) == _expected_read(segment, layout)

    @settings(deadline=None, max_examples=300)
    @given(
        st.lists(_VALUES, max_size=14),
        st.lists(_VALUES, max_size=14),
        st.sampled_from(["|^~\\&", "#$*!%"]),
        _LAYOUTS,
    )
    def test_read_matches_the_general_reads_on_any_segment(
        self, msh_tail: list[str], fields: list[str], encoding: str, layout: Layout
    ) -> None:
        """Plain or not, header or not, read equals the field-by-field reads."""
        fs = encoding[0]
        header = f"MSH{encoding}" + "".join(fs + value for value in msh_tail)
        message = parse_message(header + "\r" + fs.join(["ZXY", *fields]))
        for segment in message.segments:
            assert segment.read(layout) == _expected_read(segment, layout)

    def test_width_is_the_number_of_values_read(self, pid: Segment) -> None:
        """A layout gives one value per field and count values per component pair."""
        layout = Layout((3, 7), ((5, 3), (11, 2)))
        assert layout.width == 7
        assert len(pid.read(layout)) == layout.width

    def test_layout_rejects_positions_below_1(self) -> None:
        """Field numbers and component counts start at 1, checked when a layout is built."""
        with pytest.raises(ValueError):
            Layout((3, 0))
        with pytest.raises(ValueError):
            Layout((3,), ((0, 2),))
        with pytest.raises(ValueError):
            Layout((3,), ((5, 0),))

    def test_message_read_is_the_first_segment_read(self, message: Message) -> None:
        """Message.read reads the first segment of a name, or gives blanks when absent."""
        layout = Layout((3, 7), ((5, 3),))
        pid = message.first("PID")
        assert pid is not None
        assert message.read("PID", layout) == pid.read(layout)
        assert message.read("OBX", layout) == [""] * layout.width


class TestMessage:
    def test_first_and_all(self, message: Message) -> None:
        """first gives the first segment of a name, all gives each one, in order."""
        assert message.first("OBX") is None
        assert message.all("OBX") == []
        assert [s.name for s in message.all("PID")] == ["PID"]
        assert message.first("PID") is message.all("PID")[0]

    def test_z_segments_are_carried(self, message: Message) -> None:
        """Z-segments are segments like any other."""
        zxy = message.first("ZXY")
        assert zxy is not None
        assert zxy.get(2, 2) == "extension"
        assert message.names == ["MSH", "EVN", "PID", "PV1", "ZXY"]

    def test_text_joins_segments_with_cr(self, message: Message) -> None:
        """text is the message with CR segment terminators."""
        assert message.text == ADT_A01_251

    def test_header_values_are_empty_when_absent(self) -> None:
        """A bare MSH gives empty header values, not errors."""
        message = parse_message("MSH|^~\\&")
        assert message.control_id == ""
        assert message.version == ""
        assert message.trigger_event == ""
        assert message.segments[0].get(9, 2) == ""
