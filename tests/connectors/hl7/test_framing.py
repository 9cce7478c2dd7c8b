"""Tests for connectors/hl7/framing.py: feed files, MLLP frames and the decoder."""

from __future__ import annotations

import pytest

from carebus.errors import Unparseable
from connectors.hl7 import FeedItem, FramingError, MllpDecoder, frame, iter_feed, parse_message

M1 = b"MSH|^~\\&|A|F1|B|R1|20240101||ADT^A01|C1|P|2.4\rPID|1||X1"
M2 = b"MSH|^~\\&|A|F1|B|R1|20240101||ADT^A08|C2|P|2.4\rPID|1||X2\rPV1|1|I"
M3 = b"MSH|^~\\&|A|F1|B|R1|20240101||ORU^R01|C3|P|2.5.1\rOBX|1|NM|X||7"


def _ids(items: list[FeedItem]) -> list[str]:
    return [parse_message(item.raw).control_id for item in items]


class TestPlainFeeds:
    @pytest.mark.parametrize("terminator", [b"\r", b"\n", b"\r\n"])
    def test_splits_at_each_msh_line(self, terminator: bytes) -> None:
        """Each line starting MSH starts a message, whatever the segment terminator."""
        data = terminator.join([M1, M2, M3]).replace(b"\r", terminator) + terminator
        items = list(iter_feed(data))
        assert [i.position for i in items] == [1, 2, 3]
        assert _ids(items) == ["C1", "C2", "C3"]
        assert [data[i.offset : i.offset + 3] for i in items] == [b"MSH"] * 3
        assert all(i.batch is None for i in items)

    def test_raw_is_the_message_without_trailing_blank_lines(self) -> None:
        """Blank lines between messages belong to neither."""
        items = list(iter_feed(M1 + b"\r\n\r\n\n" + M2 + b"\n\n"))
        assert [i.raw for i in items] == [M1, M2]
        assert items[1].offset == len(M1) + 5

    def test_strips_the_byte_order_mark(self) -> None:
        """A leading UTF-8 byte-order mark is not part of the first message."""
        items = list(iter_feed(b"\xef\xbb\xbf" + M1))
        assert items == [FeedItem(1, 3, M1, None)]

    def test_empty_feeds_have_no_items(self) -> None:
        """An empty or whitespace-only feed gives nothing."""
        assert list(iter_feed(b"")) == []
        assert list(iter_feed(b" \r\n\n")) == []
        assert list(iter_feed(b"\xef\xbb\xbf")) == []

    def test_junk_before_and_after_messages_is_an_item(self) -> None:
        """Bytes outside any message become their own item, which the parser rejects."""
        data = b"garbage line\n" + M1 + b"\nFTS|1\nmore junk\n"
        items = list(iter_feed(data))
        assert [i.position for i in items] == [1, 2, 3]
        assert items[0].raw == b"garbage line"
        assert items[0].offset == 0
        assert items[1].raw == M1
        assert items[2].raw == b"more junk"
        assert items[2].offset == data.index(b"more junk")
        for junk in (items[0], items[2]):
            with pytest.raises(Unparseable):
                parse_message(junk.raw)


class TestBatches:
    def test_batch_headers_become_metadata(self) -> None:
        """FHS/BHS fields are kept as batch metadata and their lines leave the messages."""
        data = b"\r".join(
            [
                b"FHS|^~\\&|SENDAPP|RXX01|||20240101||file-1.hl7||FILE-7",
                b"BHS|^~\\&|SENDAPP|RXX01|||||||BATCH-3",
                M1,
                M2,
                b"BTS|2",
                b"FTS|1",
            ]
        )
        items = list(iter_feed(data))
        assert [i.raw for i in items] == [M1, M2]
        batch = items[0].batch
        assert batch is not None
        assert batch["FHS-3"] == "SENDAPP"
        assert batch["FHS-4"] == "RXX01"
        assert batch["FHS-9"] == "file-1.hl7"
        assert batch["FHS-11"] == "FILE-7"
        assert batch["BHS-11"] == "BATCH-3"
        assert batch["BHS-2"] == "^~\\&"
        assert items[1].batch == batch

    def test_a_new_bhs_replaces_the_batch_but_keeps_the_file(self) -> None:
        """Each BHS starts new batch metadata; FHS fields carry over."""
        data = b"\n".join(
            [
                b"FHS|^~\\&||RXX01|||||||F1",
                b"BHS|^~\\&|||||||||B1",
                M1,
                b"BTS|1",
                b"BHS|^~\\&|||||||||B2",
                M2,
                M3,
                b"BTS|2",
                b"FTS|2",
            ]
        )
        items = list(iter_feed(data))
        assert _ids(items) == ["C1", "C2", "C3"]
        batches = [i.batch or {} for i in items]
        assert [b.get("BHS-11") for b in batches] == ["B1", "B2", "B2"]
        assert [b.get("FHS-11") for b in batches] == ["F1", "F1", "F1"]

    def test_bhs_without_fhs(self) -> None:
        """A batch without a file header still gives batch metadata."""
        items = list(iter_feed(b"BHS|^~\\&|APP\r" + M1 + b"\rBTS|1"))
        assert items[0].batch == {"BHS-1": "|", "BHS-2": "^~\\&", "BHS-3": "APP"}
        assert items[0].raw == M1


class TestMllpFeeds:
    def test_frames_with_and_without_the_trailing_cr(self) -> None:
        """Frames end at 0x1C, with or without 0x0D, with whitespace between them."""
        data = frame(M1) + b"\n" + b"\x0b" + M2 + b"\x1c" + b"\r\n  " + frame(M3)
        items = list(iter_feed(data))
        assert [i.raw for i in items] == [M1, M2, M3]
        assert [i.offset for i in items] == [1, data.index(M2), data.index(M3)]

    def test_junk_between_frames_is_an_item(self) -> None:
        """Bytes outside frames become an item that the parser rejects."""
        data = frame(M1) + b"noise" + frame(M2)
        items = list(iter_feed(data))
        assert [i.raw for i in items] == [M1, b"noise", M2]
        assert items[1].offset == data.index(b"noise")
        with pytest.raises(Unparseable):
            parse_message(items[1].raw)

    def test_an_unterminated_frame_is_rejected(self) -> None:
        """A frame without 0x1C at the end of the feed is reported, not parsed."""
        data = frame(M1) + b"\x0b" + M2
        items = list(iter_feed(data))
        assert items[0].raw == M1
        assert items[1].raw == b"\x0b" + M2
        with pytest.raises(Unparseable, match="MLLP"):
            parse_message(items[1].raw)

    def test_a_start_block_inside_a_frame_ends_it_as_junk(self) -> None:
        """A frame interrupted by a new start block is rejected; the next frame is kept."""
        data = b"\x0b" + M1 + frame(M2)
        items = list(iter_feed(data))
        assert items[1].raw == M2
        with pytest.raises(Unparseable):
            parse_message(items[0].raw)

    def test_a_frame_may_hold_a_batch(self) -> None:
        """A batch inside one frame is split into its messages."""
        payload = b"\r".join([b"BHS|^~\\&|APP||||||||B9", M1, M2, b"BTS|2"])
        items = list(iter_feed(b"\xef\xbb\xbf" + frame(payload) + frame(M3)))
        assert _ids(items) == ["C1", "C2", "C3"]
        assert [(i.batch or {}).get("BHS-11") for i in items] == ["B9", "B9", None]
        assert [i.position for i in items] == [1, 2, 3]


class TestMllpDecoder:
    def test_frames_split_across_reads(self) -> None:
        """Frames arriving byte by byte are returned once complete."""
        decoder = MllpDecoder()
        stream = frame(M1) + frame(M2)
        frames: list[bytes] = []
        for i in range(len(stream)):
            frames += decoder.feed(stream[i : i + 1])
        assert frames == [M1, M2]
        assert decoder.buffered == 0

    def test_several_frames_in_one_read(self) -> None:
        """One read may complete several frames and start another."""
        decoder = MllpDecoder()
        stream = frame(M1) + frame(M2) + b"\x0b" + M3[:10]
        assert decoder.feed(stream) == [M1, M2]
        assert decoder.buffered == 10
        assert decoder.feed(M3[10:] + b"\x1c") == [M3]
        assert decoder.feed(b"\r") == []

    def test_bytes_outside_a_frame_raise(self) -> None:
        """Non-whitespace outside a frame raises FramingError with a count, not the bytes."""
        decoder = MllpDecoder()
        with pytest.raises(FramingError) as info:
            decoder.feed(frame(M1) + b"SECRET" + frame(M2))
        assert "6 bytes" in str(info.value)
        assert "SECRET" not in str(info.value)
        assert info.value.frames == [M1]
        assert isinstance(info.value, Unparseable)
        assert decoder.feed(frame(M3)) == [M3]

    def test_oversize_frame_raises(self) -> None:
        """A frame beyond max_frame_bytes raises before it ends, naming sizes only."""
        decoder = MllpDecoder(max_frame_bytes=20)
        decoder.feed(b"\x0b" + b"A" * 15)
        with pytest.raises(FramingError, match="exceeds the limit of 20 bytes"):
            decoder.feed(b"B" * 10)
        assert decoder.buffered == 0
        assert MllpDecoder(max_frame_bytes=len(M1)).feed(frame(M1)) == [M1]

    def test_invalid_limit(self) -> None:
        """max_frame_bytes must be positive."""
        with pytest.raises(ValueError):
            MllpDecoder(max_frame_bytes=0)


class TestFrame:
    def test_wraps_a_payload(self) -> None:
        """frame adds the start block and the end block with CR."""
        assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\r"

    def test_refuses_block_characters_in_the_payload(self) -> None:
        """A payload holding 0x1C or 0x0B cannot be framed."""
        with pytest.raises(FramingError):
            frame(b"MSH|\x1c")
