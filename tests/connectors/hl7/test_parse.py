"""Tests for connectors/hl7/parse.py: from bytes or text to a Message."""

from __future__ import annotations

import pytest

from carebus.errors import Unparseable
from connectors.hl7 import Encoding, parse_message
from connectors.hl7.parse import peek_msh18
from tests.connectors.hl7.samples import ADT_A01_251, ADT_A03_23


def _msh(msh18: str = "", version: str = "2.5.1") -> str:
    fields = ["MSH", r"^~\&", "APP", "FAC", "RAPP", "RFAC", "20240101", "", "ADT^A08", "C1", "P"]
    fields += [version, "", "", "", "", "", msh18]
    return "|".join(fields)


class TestVersions:
    def test_parses_a_v251_message(self) -> None:
        """A 2.5.1 ADT^A01 gives its header values and every segment in order."""
        message = parse_message(ADT_A01_251.encode())
        assert message.version == "2.5.1"
        assert (message.message_type, message.trigger_event) == ("ADT", "A01")
        assert message.control_id == "CTRL-251"
        assert message.sending_facility == "RXX01"
        assert message.receiving_facility == "RYY02"
        assert [s.name for s in message.segments] == ["MSH", "EVN", "PID", "PV1", "ZXY"]

    def test_parses_a_v23_message_with_crlf(self) -> None:
        """A 2.3 ADT^A03 with CRLF line ends gives its fields and drops the trailing blank line."""
        message = parse_message(ADT_A03_23.encode())
        assert message.version == "2.3"
        assert message.trigger_event == "A03"
        pv1 = message.first("PV1")
        assert pv1 is not None
        assert pv1.get(37) == "79"
        assert pv1.get(19) == "V001"
        assert len(message.segments) == 4

    def test_accepts_text(self) -> None:
        """A str is parsed like bytes, without decoding."""
        message = parse_message(ADT_A01_251)
        assert message.control_id == "CTRL-251"
        assert message.charset is None


class TestLineEnds:
    @pytest.mark.parametrize("terminator", ["\r", "\n", "\r\n"])
    def test_every_terminator_gives_the_same_segments(self, terminator: str) -> None:
        """Segments ended by CR, LF or CRLF give the same segments."""
        text = ADT_A01_251.replace("\r", terminator) + terminator * 3
        message = parse_message(text.encode())
        assert [s.name for s in message.segments] == ["MSH", "EVN", "PID", "PV1", "ZXY"]
        assert message.first("ZXY") is not None
        assert message.all("ZXY")[0].get(2, 2) == "extension"

    def test_blank_lines_between_segments_are_skipped(self) -> None:
        """Blank and whitespace-only lines are not segments."""
        text = ADT_A01_251.replace("\r", "\r\n  \r\n")
        assert len(parse_message(text).segments) == 5

    def test_a_line_feed_inside_data_stays_in_its_segment(self) -> None:
        """A line that does not start like a segment continues the previous one."""
        text = "\r".join([_msh(), "OBX|1|TX|NOTE||first line\nsecond line|"])
        obx = parse_message(text).first("OBX")
        assert obx is not None
        assert obx.get(5) == "first line\nsecond line"

    def test_a_lower_case_continuation_line_is_data(self) -> None:
        """A three-letter lower-case line is text, not a segment."""
        text = "\r".join([_msh(), "NTE|1||see below", "and"])
        message = parse_message(text)
        assert message.names == ["MSH", "NTE"]
        assert message.segments[1].get(3) == "see below\nand"

    def test_leading_whitespace_is_ignored(self) -> None:
        """Whitespace and blank lines before MSH are skipped."""
        assert parse_message(b"\r\n  " + ADT_A01_251.encode()).control_id == "CTRL-251"


class TestEncodingCharacters:
    def test_reads_non_default_delimiters(self) -> None:
        """Delimiters come from MSH-1 and MSH-2, whatever they are."""
        text = "\r".join(
            [
                "MSH#$*!@#APP#FAC#RAPP#RFAC#20240101##ADT$A01#C9#P#2.4",
                "PID#1##111$$$AUTH$MR*222$$$AUTH2$PI##DOE$JANE##19800101",
                "NTE#1##caret ^ pipe | tilde ~ amp & kept!F!!S!",
            ]
        )
        message = parse_message(text)
        assert message.encoding == Encoding("#", "$", "*", "!", "@", "")
        assert message.trigger_event == "A01"
        pid = message.first("PID")
        assert pid is not None
        assert pid.get(3, 4, repetition=2) == "AUTH2"
        assert pid.get(5, 2) == "JANE"
        nte = message.first("NTE")
        assert nte is not None
        assert nte.get(3) == "caret ^ pipe | tilde ~ amp & kept#$"

    def test_reads_a_truncation_character(self) -> None:
        """A five-character MSH-2 (HL7 2.7+) gives the truncation character."""
        message = parse_message(_msh(version="2.8").replace(r"^~\&", r"^~\&#"))
        assert message.encoding.truncation == "#"
        assert message.msh.get(2) == r"^~\&#"
        assert message.version == "2.8"

    def test_msh_1_and_msh_2_are_fields_1_and_2(self) -> None:
        """MSH-1 is the field separator and MSH-2 the encoding characters, unsplit."""
        msh = parse_message(_msh()).msh
        assert msh.get(1) == "|"
        assert msh.get(2) == r"^~\&"
        assert msh.repetitions(2) == 1
        assert msh.get(3) == "APP"

    @pytest.mark.parametrize(
        "header",
        [
            "MSHA^~\\&A",  # alphanumeric field separator
            "MSH||APP",  # empty MSH-2
            "MSH|^~\\&^#|",  # six encoding characters, one repeated
            "MSH|^^\\&|APP",  # repeated encoding character
            "MSH|^ \\&|APP",  # whitespace as a delimiter
            "MSH",  # no separator at all
        ],
    )
    def test_rejects_unusable_encoding_characters(self, header: str) -> None:
        """MSH-1/MSH-2 that cannot be delimiters make the message unparseable."""
        with pytest.raises(Unparseable):
            parse_message(header + "\rPID|1")


class TestCharacterSets:
    def test_decodes_by_msh18_latin1(self) -> None:
        """MSH-18 8859/1 decodes the bytes as Latin-1 even when they are also valid UTF-8."""
        text = _msh("8859/1") + "\rPID|1||X1||MÃ¼LLER^RENÃ©E"
        raw = text.encode("iso-8859-1")
        message = parse_message(raw)
        assert message.charset == "iso8859-1"
        assert message.declared_charset == "iso8859-1"
        pid = message.first("PID")
        assert pid is not None
        assert pid.get(5) == "MÃ¼LLER"

    def test_decodes_by_msh18_utf8(self) -> None:
        """MSH-18 UNICODE UTF-8 decodes non-ASCII names as UTF-8."""
        raw = (_msh("UNICODE UTF-8") + "\rPID|1||X1||MÜLLER^RENÉE").encode("utf-8")
        pid = parse_message(raw).first("PID")
        assert pid is not None
        assert (pid.get(5), pid.get(5, 2)) == ("MÜLLER", "RENÉE")

    def test_undeclared_utf8_is_decoded_as_utf8(self) -> None:
        """Without MSH-18, bytes that are valid UTF-8 are UTF-8."""
        message = parse_message((_msh() + "\rPID|1||X1||ŁUKASZ").encode("utf-8"))
        assert message.charset == "utf-8"
        assert message.segments[1].get(5) == "ŁUKASZ"

    def test_undeclared_non_utf8_uses_the_fallback(self) -> None:
        """Without MSH-18, bytes that are not UTF-8 are decoded with the fallback charset."""
        raw = (_msh() + "\rPID|1||X1||SØREN").encode("iso-8859-1")
        message = parse_message(raw, fallback_charset="cp1252")
        assert message.charset == "cp1252"
        assert message.segments[1].get(5) == "SØREN"

    def test_declared_ascii_with_latin1_bytes_falls_back(self) -> None:
        """Bytes that break the declared charset go to UTF-8, then to the fallback."""
        raw = (_msh("ASCII") + "\rPID|1||X1||JOSÉ").encode("iso-8859-1")
        pid = parse_message(raw).first("PID")
        assert pid is not None
        assert pid.get(5) == "JOSÉ"

    def test_unknown_msh18_uses_utf8_then_fallback(self) -> None:
        """An MSH-18 carebus does not know is ignored."""
        raw = (_msh("KLINGON") + "\rPID|1||X1||ÅSA").encode("iso-8859-1")
        message = parse_message(raw)
        assert message.declared_charset is None
        assert message.segments[1].get(5) == "ÅSA"

    @pytest.mark.parametrize("encoding", ["ascii", "iso-8859-1", "utf-8", "str"])
    @pytest.mark.parametrize("msh18", ["UNDEFINED", "UNDEFINED~UNICODE UTF-8", "CP037^X"])
    def test_unusable_msh18_is_unparseable_for_any_bytes(self, encoding: str, msh18: str) -> None:
        """An MSH-18 naming a codec that cannot carry HL7 is rejected naming MSH-18, whether or
        not the message needs decoding, with its control id and without the value."""
        text = _msh(msh18) + "\rPID|1||X1||" + ("ASA" if encoding == "ascii" else "ÅSA")
        raw: bytes | str = text if encoding == "str" else text.encode(encoding)
        with pytest.raises(Unparseable) as caught:
            parse_message(raw)
        assert caught.value.field == "MSH-18"
        assert caught.value.detail == "MSH-18 names a character set that cannot carry HL7"
        assert caught.value.control_id == parse_message(_msh()).control_id

    def test_strips_a_utf8_bom(self) -> None:
        """A leading UTF-8 byte-order mark is not part of the message."""
        message = parse_message(b"\xef\xbb\xbf" + ADT_A01_251.encode())
        assert message.msh.name == "MSH"
        assert message.control_id == "CTRL-251"

    def test_decodes_utf16_with_a_bom(self) -> None:
        """A UTF-16 message with a byte-order mark is decoded as UTF-16."""
        message = parse_message((_msh() + "\rPID|1||X1||ZOË").encode("utf-16"))
        assert message.segments[1].get(5) == "ZOË"

    def test_peeks_msh18_from_bytes(self) -> None:
        """MSH-18 is read from the raw MSH line, first repetition and component."""
        assert peek_msh18(_msh("8859/15~UNICODE UTF-8").encode() + b"\rPID|1") == "8859/15"
        assert peek_msh18(_msh().encode()) == ""
        assert peek_msh18(b"MSH|^~\\&|A\rPID|" + b"|" * 30) == ""


class TestRejections:
    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b"", "empty message"),
            (b"   \r\n", "empty message"),
            (b"PID|1||X", "does not start with an MSH segment"),
            (b"\x00\xff\xfe garbage", "does not start with an MSH segment"),
            (b"FHS|^~\\&|A\rMSH|^~\\&|B", "batch"),
            (b"\x0bMSH|^~\\&|A|B", "MLLP"),
            (b"MSH|^~\\&|A|B\r\x1c\r", "MLLP"),
        ],
    )
    def test_junk_is_unparseable_with_a_reason(self, raw: bytes, reason: str) -> None:
        """Input that is not one HL7 message raises Unparseable saying why."""
        with pytest.raises(Unparseable, match=reason) as info:
            parse_message(raw)
        assert info.value.reason == "unparseable"

    def test_rejects_several_messages_in_one_payload(self) -> None:
        """Two MSH segments in one payload are rejected rather than merged."""
        with pytest.raises(Unparseable, match="2 MSH segments") as info:
            parse_message(ADT_A01_251 + "\r" + ADT_A01_251)
        assert info.value.control_id == "CTRL-251"

    @pytest.mark.parametrize("name", ["BTS", "FTS", "BHS"])
    def test_rejects_batch_segments_inside_a_message(self, name: str) -> None:
        """Batch header or trailer lines inside one payload are rejected."""
        with pytest.raises(Unparseable, match="batch segments"):
            parse_message(ADT_A01_251 + f"\r{name}|1")

    def test_reason_never_contains_message_content(self) -> None:
        """The error message of a rejected message does not repeat its content."""
        with pytest.raises(Unparseable) as info:
            parse_message(b"PID|1||9434765919^^^NHS||SECRET^NAME")
        assert "SECRET" not in str(info.value)
        assert "9434765919" not in str(info.value)

    def test_rejects_other_types(self) -> None:
        """Anything but bytes or str is a programming error."""
        with pytest.raises(TypeError):
            parse_message(42)  # type: ignore[arg-type]
