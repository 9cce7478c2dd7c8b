"""Property-based fuzzing of connectors/hl7: parser and framing never fail unexpectedly."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carebus.errors import Unparseable
from connectors.hl7 import FramingError, MllpDecoder, frame, iter_feed, parse_message
from tests.connectors.hl7.strategies import DELIMS, hostile, junk_charset, mutated

FUZZ = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])


def _exercise(raw: bytes | str) -> None:
    """Parse and read every part of the message; only Unparseable may escape, with a reason
    and a detail."""
    try:
        message = parse_message(raw)
    except Unparseable as exc:
        assert exc.reason == "unparseable"
        assert exc.detail
        return
    _ = (message.control_id, message.version, message.message_type, message.trigger_event)
    _ = (message.sending_facility, message.receiving_facility, message.declared_charset)
    repr(message)
    for segment in message.segments:
        for field in range(1, min(segment.field_count, 40) + 2):
            segment.raw(field)
            segment.components(field)
            for rep in range(1, segment.repetitions(field) + 2):
                segment.components(field, rep)
                for comp in (1, 2, 3):
                    segment.get(field, comp, 1, rep)
                    segment.get(field, comp, 2, rep)


class TestParserFuzz:
    @FUZZ
    @given(st.binary(max_size=400))
    def test_arbitrary_bytes(self, raw: bytes) -> None:
        """Arbitrary bytes parse or raise Unparseable, nothing else."""
        _exercise(raw)

    @FUZZ
    @given(st.binary(max_size=300))
    def test_bytes_after_msh(self, tail: bytes) -> None:
        """Anything after an MSH prefix parses or raises Unparseable."""
        _exercise(b"MSH" + tail)

    @FUZZ
    @given(st.text(alphabet=st.sampled_from([*DELIMS, "A", "1", "é", "\ufeff", " "])))
    def test_delimiter_soup(self, body: str) -> None:
        """Text made mostly of delimiters parses or raises Unparseable."""
        _exercise("MSH" + body)

    @FUZZ
    @given(mutated())
    def test_mutated_messages(self, raw: bytes) -> None:
        """Real messages with random damage parse or raise Unparseable."""
        _exercise(raw)

    @FUZZ
    @given(junk_charset())
    def test_junk_msh18(self, raw: bytes) -> None:
        """Real messages with a junk MSH-18 (unusable codecs, non-text, unknown names) parse
        or raise Unparseable, nothing else (no UnicodeError, no LookupError)."""
        _exercise(raw)

    @FUZZ
    @given(junk_charset())
    def test_junk_msh18_as_text(self, raw: bytes) -> None:
        """The same messages given as text (no decoding) parse or raise Unparseable."""
        _exercise(raw.decode("latin-1"))


class TestFramingFuzz:
    @FUZZ
    @given(st.binary(max_size=400))
    def test_iter_feed_on_arbitrary_bytes(self, data: bytes) -> None:
        """iter_feed never raises, and every item is a slice of the feed at its offset."""
        items = list(iter_feed(data))
        assert [i.position for i in items] == list(range(1, len(items) + 1))
        for item in items:
            assert item.raw
            assert data[item.offset : item.offset + len(item.raw)] == item.raw
            _exercise(item.raw)

    @FUZZ
    @given(st.lists(mutated(), min_size=1, max_size=4), st.booleans())
    def test_iter_feed_on_damaged_feeds(self, messages: list[bytes], mllp: bool) -> None:
        """Feeds of damaged messages, framed or not, give slices at their offsets."""
        data = b"".join(
            frame(m) if mllp and b"\x1c" not in m and b"\x0b" not in m else m + b"\n"
            for m in messages
        )
        for item in iter_feed(data):
            assert data[item.offset : item.offset + len(item.raw)] == item.raw
            _exercise(item.raw)

    @FUZZ
    @given(
        st.lists(
            st.binary(max_size=60).filter(lambda b: b"\x1c" not in b and b"\x0b" not in b),
            max_size=5,
        ),
        st.lists(st.integers(1, 40), min_size=1, max_size=10),
    )
    def test_decoder_round_trip(self, payloads: list[bytes], cuts: list[int]) -> None:
        """Framed payloads cut into any chunks come back whole and in order."""
        stream = b"".join(frame(p) for p in payloads)
        decoder = MllpDecoder()
        frames: list[bytes] = []
        index = 0
        i = 0
        while index < len(stream):
            size = cuts[i % len(cuts)]
            frames += decoder.feed(stream[index : index + size])
            index += size
            i += 1
        assert frames == payloads

    @FUZZ
    @given(st.lists(st.binary(max_size=80), max_size=6), st.integers(1, 100))
    def test_decoder_on_arbitrary_bytes(self, chunks: list[bytes], limit: int) -> None:
        """The decoder returns frames or raises FramingError, nothing else."""
        decoder = MllpDecoder(max_frame_bytes=limit)
        for chunk in chunks:
            try:
                for payload in decoder.feed(chunk):
                    assert len(payload) <= limit
            except FramingError as exc:
                assert "bytes" in str(exc)

    @FUZZ
    @given(st.lists(hostile(), max_size=4), st.binary(max_size=40), st.integers(1, 64))
    def test_decoder_then_parser_on_hostile_streams(
        self, messages: list[bytes], junk: bytes, cut: int
    ) -> None:
        """A stream of framed hostile payloads and junk, cut anywhere, gives frames that parse
        or raise Unparseable, or a FramingError: never another exception."""
        stream = b"".join(frame(m.replace(b"\x0b", b"").replace(b"\x1c", b"")) for m in messages)
        stream += junk
        decoder = MllpDecoder(max_frame_bytes=1000)
        for index in range(0, len(stream), cut):
            try:
                frames = decoder.feed(stream[index : index + cut])
            except FramingError as exc:
                assert exc.reason == "framing-error"
                frames = exc.frames
            for payload in frames:
                _exercise(payload)
