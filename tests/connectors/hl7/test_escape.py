"""Tests for connectors/hl7/escape.py: escape sequences."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.hl7 import DEFAULT_ENCODING, Encoding, escape, parse_message, unescape

ENC = DEFAULT_ENCODING


class TestUnescape:
    @pytest.mark.parametrize(
        ("escaped", "plain"),
        [
            ("a\\F\\b", "a|b"),
            ("a\\S\\b", "a^b"),
            ("a\\T\\b", "a&b"),
            ("a\\R\\b", "a~b"),
            ("a\\E\\b", "a\\b"),
            ("line 1\\.br\\line 2", "line 1\nline 2"),
            ("\\X0D0A\\", "\r\n"),
            ("caf\\XC3A9\\", "café"),
            ("no escapes", "no escapes"),
            ("\\F\\\\S\\\\T\\", "|^&"),
        ],
    )
    def test_known_sequences(self, escaped: str, plain: str) -> None:
        """Each standard escape sequence becomes the character it stands for."""
        assert unescape(escaped, ENC) == plain

    @pytest.mark.parametrize(
        "text",
        [
            "\\H\\bold\\N\\",
            "\\Zvendor\\",
            "\\.sp\\",
            "C:\\path",
            "\\X0\\",
            "\\XZZ\\",
            "a\\\\b",
            "end\\",
        ],
    )
    def test_unknown_or_broken_sequences_are_left_as_is(self, text: str) -> None:
        """Unknown sequences, bad hex and unclosed escapes are kept unchanged."""
        assert unescape(text, ENC) == text

    def test_hex_uses_the_message_charset(self) -> None:
        """\\Xhh\\ bytes are decoded in the character set given."""
        assert unescape("\\XE9\\", ENC, "iso8859-1") == "é"
        assert unescape("\\XE9\\", ENC, None, "cp1252") == "é"

    def test_hex_in_a_message_uses_msh18(self) -> None:
        """In a message, \\Xhh\\ is decoded by the charset MSH-18 declares."""
        text = "MSH|^~\\&|A|B|C|D|1||ADT^A08|1|P|2.4||||||8859/1\rPID|1||X||REN\\XC9\\E"
        assert parse_message(text).segments[1].get(5) == "RENÉE"

    def test_non_default_escape_character(self) -> None:
        """The escape character is the one from MSH-2."""
        enc = Encoding("#", "$", "*", "!", "@")
        assert unescape("a!F!b!S!c!E!", enc) == "a#b$c!"

    def test_truncation_sequence(self) -> None:
        """\\P\\ is the truncation character when MSH-2 has one."""
        assert unescape("a\\P\\b", ENC._replace(truncation="#")) == "a#b"
        assert unescape("a\\P\\b", ENC) == r"a\P\b"


class TestEscape:
    def test_escapes_delimiters_and_line_breaks(self) -> None:
        """escape turns delimiters into sequences and line breaks into \\.br\\."""
        assert escape("a|b^c&d~e\\f\r\ng", ENC) == r"a\F\b\S\c\T\d\R\e\E\f\.br\g"

    @given(st.text(alphabet=st.characters(blacklist_characters="\r")))
    def test_round_trip(self, text: str) -> None:
        """unescape(escape(x)) gives x back for text without CR."""
        assert unescape(escape(text, ENC), ENC) == text
