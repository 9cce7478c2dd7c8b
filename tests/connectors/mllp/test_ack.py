"""Tests for connectors/mllp/ack.py: reading MSH leniently and building ACKs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.hl7 import parse_message
from connectors.mllp.ack import (
    AckError,
    MshHeader,
    ack_codes,
    build_ack,
    read_header,
)

NOW = datetime(2026, 3, 1, 9, 30, 5, tzinfo=UTC)

ADT = (
    b"MSH|^~\\&|PAS^1.2.3^ISO|RXA01|CAREBUS|REGION|20260301093000||ADT^A01^ADT_A01|"
    b"CTRL-1|P|2.5.1|||||GBR|UNICODE UTF-8\r"
    b"EVN|A01|20260301093000\r"
    b"PID|1||9434765919^^^NHS^NH||SMITH^JANE\r"
)


def _segments(ack: bytes) -> list[list[str]]:
    return [s.split("|") for s in ack.decode("latin-1").split("\r") if s]


class TestReadHeader:
    def test_reads_msh_fields(self) -> None:
        """The fields an ACK needs are read from MSH, raw and in place."""
        h = read_header(ADT)
        assert h is not None
        assert h.sending_application == "PAS^1.2.3^ISO"
        assert h.sending_facility == "RXA01"
        assert h.receiving_application == "CAREBUS"
        assert h.control_id == "CTRL-1"
        assert h.version == "2.5.1"
        assert h.trigger_event == "A01"
        assert h.character_set == "UNICODE UTF-8"

    def test_garbage_has_no_header(self) -> None:
        """Bytes that do not start with MSH give no header."""
        assert read_header(b"hello world") is None
        assert read_header(b"") is None

    def test_leading_framing_and_whitespace_are_skipped(self) -> None:
        """A start block, a byte-order mark or blank lines before MSH do not hide it."""
        h = read_header(b"\x0b\r\n\xef\xbb\xbf" + ADT)
        assert h is not None and h.control_id == "CTRL-1"

    def test_partial_frame_still_gives_control_id(self) -> None:
        """Half a message (an oversize frame's start) still yields its control id."""
        h = read_header(ADT[:120])
        assert h is not None and h.control_id == "CTRL-1"

    def test_unusual_separators(self) -> None:
        """Other field and component separators are honoured."""
        h = read_header(b"MSH#$~\\&#APP#FAC#RAPP#RFAC#20260101##ORU$R01#ID9#T#2.4\r")
        assert h is not None
        assert h.field_separator == "#"
        assert h.component_separator == "$"
        assert h.trigger_event == "R01"
        assert h.control_id == "ID9"
        assert h.processing_id == "T"


class TestAckCodes:
    @pytest.mark.parametrize(
        ("result", "expected"),
        [("accepted", ["AA"]), ("error", ["AE"]), ("rejected", ["AR"])],
    )
    def test_original_mode_always_one_application_ack(
        self, result: str, expected: list[str]
    ) -> None:
        """Without MSH-15/16 (original mode) there is exactly one AA/AE/AR."""
        assert ack_codes(read_header(ADT), result, reject_code="AR") == expected  # type: ignore[arg-type]

    def test_reject_code_can_be_ae(self) -> None:
        """Rejections answer AE when so configured."""
        assert ack_codes(None, "rejected", reject_code="AE") == ["AE"]

    @pytest.mark.parametrize(
        ("accept", "app", "result", "expected"),
        [
            ("AL", "NE", "accepted", ["CA"]),
            ("AL", "AL", "accepted", ["CA", "AA"]),
            ("NE", "AL", "rejected", ["AR"]),
            ("NE", "NE", "accepted", []),
            ("ER", "NE", "accepted", []),
            ("ER", "NE", "error", ["CE"]),
            ("SU", "ER", "accepted", ["CA"]),
            ("SU", "ER", "rejected", ["AR"]),
            ("AL", "", "rejected", ["CR"]),
            ("", "SU", "accepted", ["AA"]),
        ],
    )
    def test_enhanced_mode(self, accept: str, app: str, result: str, expected: list[str]) -> None:
        """MSH-15 governs the commit ACK and MSH-16 the application ACK (AL, NE, ER, SU)."""
        header = MshHeader(accept_ack_type=accept, application_ack_type=app)
        assert ack_codes(header, result, reject_code="AR") == expected  # type: ignore[arg-type]


class TestBuildAck:
    def test_swaps_sender_and_receiver_and_echoes_control_id(self) -> None:
        """The ACK's MSH swaps MSH-3/4 with MSH-5/6 and MSA-2 echoes MSH-10."""
        ack = build_ack(read_header(ADT), "AA", control_id="ACK1", timestamp=NOW)
        msh, msa = _segments(ack)
        assert msh[:6] == ["MSH", "^~\\&", "CAREBUS", "REGION", "PAS^1.2.3^ISO", "RXA01"]
        assert msh[6] == "20260301093005+0000"
        assert msh[8] == "ACK^A01^ACK"
        assert msh[9] == "ACK1"
        assert msh[10] == "P"
        assert msh[11] == "2.5.1"
        assert msh[17] == "UNICODE UTF-8"
        assert msa == ["MSA", "AA", "CTRL-1"]

    def test_ack_parses_as_hl7(self) -> None:
        """The ACK is itself a valid HL7 message for the project's parser."""
        error = AckError("missing-required-field", "PID-3 is empty", "101", "PID-3")
        ack = build_ack(read_header(ADT), "AR", control_id="ACK2", timestamp=NOW, error=error)
        message = parse_message(ack)
        assert message.message_type == "ACK"
        msa = message.first("MSA")
        assert msa is not None and msa.get(1) == "AR" and msa.get(2) == "CTRL-1"

    def test_error_in_msa3_and_err_v25(self) -> None:
        """A rejection carries the reason in MSA-3 and ERR-2/3/4/5 (version 2.5 and later)."""
        error = AckError("missing-required-field", "PID-3 is empty", "101", "PID-3")
        ack = build_ack(read_header(ADT), "AR", control_id="A", timestamp=NOW, error=error)
        _, msa, err = _segments(ack)
        assert msa[3] == "missing-required-field: PID-3 is empty"
        assert err[2] == "PID^1^3"
        assert err[3] == "101^Required field missing^HL70357"
        assert err[4] == "E"
        assert err[5].startswith("missing-required-field^")

    def test_err_before_v25_uses_err1(self) -> None:
        """Before 2.5 the error code and location go in ERR-1 (ELD)."""
        h = read_header(ADT.replace(b"|2.5.1|", b"|2.3|"))
        error = AckError("unsupported-message-type", "ZZZ^Z01 is not translated", "200")
        _, _, err = _segments(build_ack(h, "AR", control_id="A", timestamp=NOW, error=error))
        assert err == ["ERR", "^^^200&Unsupported message type&HL70357"]

    def test_message_type_before_231_has_no_structure(self) -> None:
        """ACK MSH-9 is ACK^trigger before 2.3.1 and ACK^trigger^ACK from it."""
        h = read_header(ADT.replace(b"|2.5.1|", b"|2.3|"))
        msh = _segments(build_ack(h, "AA", control_id="A", timestamp=NOW))[0]
        assert msh[8] == "ACK^A01"

    def test_reuses_sender_encoding_characters(self) -> None:
        """The ACK uses the sender's separators, and escapes them in carebus's text."""
        h = read_header(b"MSH#$~\\&#APP#FAC#RAPP#RFAC#20260101##ORU$R01#ID9#P#2.5\r")
        error = AckError("unparseable", "bad # and $ here", "102")
        ack = build_ack(h, "AR", control_id="A", timestamp=NOW, error=error).decode()
        lines = ack.split("\r")
        assert lines[0].startswith("MSH#$~\\&#RAPP#RFAC#APP#FAC#")
        assert "ACK$R01$ACK" in lines[0]
        assert lines[1] == "MSA#AR#ID9#unparseable: bad \\F\\ and \\S\\ here"

    def test_echoes_non_ascii_bytes_unchanged(self) -> None:
        """Fields in the sender's character set go back byte for byte."""
        raw = ADT.replace(b"|RXA01|", "|HÔPITAL|".encode())
        ack = build_ack(read_header(raw), "AA", control_id="A", timestamp=NOW)
        assert "|HÔPITAL".encode() in ack

    def test_unreadable_message_gets_default_ack(self) -> None:
        """With no readable MSH the ACK uses default separators and an empty MSA-2."""
        error = AckError("unparseable", "does not start with MSH", "102")
        ack = build_ack(None, "AR", control_id="A", timestamp=NOW, error=error)
        msh, msa, _ = _segments(ack)
        assert msh[1] == "^~\\&"
        assert msa[:3] == ["MSA", "AR", ""]

    def test_no_python_exception_text(self) -> None:
        """Text carebus adds is plain ASCII with no line breaks, whatever the detail holds."""
        error = AckError("unparseable", "line one\rline two — dash", "102")
        ack = build_ack(read_header(ADT), "AR", control_id="A", timestamp=NOW, error=error)
        _, msa, _ = _segments(ack)
        assert msa[3] == "unparseable: line one?line two ? dash"
        assert ack.isascii()
