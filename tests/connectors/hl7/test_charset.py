"""Tests for connectors/hl7/charset.py: MSH-18 names and decoding."""

from __future__ import annotations

import pytest

from carebus.errors import ConfigError, Unparseable
from connectors.hl7.charset import check_declared, check_fallback, codec_for, decode, utf16_codec


class TestCodecFor:
    @pytest.mark.parametrize(
        ("msh18", "codec"),
        [
            ("ASCII", "ascii"),
            ("8859/1", "iso8859-1"),
            ("8859/2", "iso8859-2"),
            ("8859/15", "iso8859-15"),
            ("ISO IR100", "iso8859-1"),
            ("UNICODE UTF-8", "utf-8"),
            ("unicode  utf-8", "utf-8"),
            ("UNICODE", "utf-8"),
            ("UTF-8", "utf-8"),
            ("ISO-8859-1", "iso8859-1"),
            ("WINDOWS-1252", "cp1252"),
            ("GB 18030-2000", "gb18030"),
        ],
    )
    def test_known_names(self, msh18: str, codec: str) -> None:
        """Table 0211 names and common spellings map to Python codecs."""
        assert codec_for(msh18) == codec

    @pytest.mark.parametrize(
        "msh18", ["", "  ", "KLINGON", "UNICODE UTF-16", "UTF-16", "rot13", "base64", "UTF\x008"]
    )
    def test_unknown_or_unusable_names(self, msh18: str) -> None:
        """Empty, unknown (even with a NUL), non-text and non-ASCII-compatible names give None."""
        assert codec_for(msh18) is None


class TestDecode:
    def test_declared_codec_first(self) -> None:
        """Bytes valid in the declared codec are decoded with it."""
        assert decode("Ã©".encode(), "iso8859-1") == ("Ã\x83Â©", "iso8859-1")

    def test_utf8_then_fallback(self) -> None:
        """Undeclared bytes are UTF-8 when valid, else the fallback."""
        assert decode("é".encode(), None) == ("é", "utf-8")
        assert decode(b"\xe9", None, "cp1252") == ("é", "cp1252")
        assert decode(b"\xe9", "ascii", "iso-8859-1") == ("é", "iso8859-1")

    def test_fallback_that_cannot_decode_replaces(self) -> None:
        """A fallback that cannot decode some bytes replaces them instead of raising."""
        assert decode(b"a\xff", None, "ascii") == ("a\ufffd", "ascii")

    def test_unknown_fallback_is_a_config_error(self) -> None:
        """A fallback that is not a codec is a configuration error."""
        with pytest.raises(ConfigError):
            decode(b"\xff", None, "no-such-codec")

    def test_utf16_detection(self) -> None:
        """UTF-16 is recognised by its byte-order mark or a UTF-16 'MSH'."""
        assert utf16_codec("MSH|".encode("utf-16")) == "utf-16"
        assert utf16_codec("MSH|".encode("utf-16-le")) == "utf-16-le"
        assert utf16_codec("MSH|".encode("utf-16-be")) == "utf-16-be"
        assert utf16_codec(b"MSH|") is None


class TestUnusableCharsets:
    @pytest.mark.parametrize(
        "msh18", ["UNDEFINED", "undefined", "CP037", "UTF-7", "HZ", "PUNYCODE", "SHIFT_JIS_2004"]
    )
    def test_unusable_names_are_rejected_by_field_not_value(self, msh18: str) -> None:
        """A codec whose ASCII does not read as itself: Unparseable naming MSH-18, not its value."""
        assert codec_for(msh18) is None
        with pytest.raises(Unparseable) as caught:
            check_declared(msh18, "CTRL-1")
        assert caught.value.field == "MSH-18"
        assert caught.value.control_id == "CTRL-1"
        assert msh18.lower() not in str(caught.value).lower()

    @pytest.mark.parametrize("msh18", ["", "KLINGON", "UTF-16", "rot13", "8859/1", "UNICODE UTF-8"])
    def test_usable_unknown_and_ignored_names_pass(self, msh18: str) -> None:
        """Known usable, unknown and ignored (non-text, UTF-16) names are not rejected."""
        check_declared(msh18)

    def test_a_failing_declared_codec_falls_back(self) -> None:
        """decode() never raises for a declared codec that fails, whatever it raises."""
        assert decode("é".encode(), "undefined") == ("é", "utf-8")
        assert decode(b"\xe9", "idna", "cp1252") == ("é", "cp1252")

    @pytest.mark.parametrize("fallback", ["undefined", "rot13"])
    def test_a_fallback_that_cannot_decode_text_is_a_config_error(self, fallback: str) -> None:
        """The fallback must decode text: undefined or a bytes-to-bytes codec is a ConfigError."""
        with pytest.raises(ConfigError):
            check_fallback(fallback)
        assert check_fallback("latin-1") == "iso8859-1"
