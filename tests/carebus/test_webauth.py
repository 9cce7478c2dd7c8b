"""Tests for carebus/webauth.py: the bearer token every carebus HTTP surface checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from carebus.errors import ConfigError
from carebus.webauth import TokenAuth, read_token, server_ssl_context


class TestTokenAuth:
    def test_only_the_exact_bearer_token_is_allowed(self) -> None:
        """Bearer plus the token passes; another token, scheme or nothing does not."""
        auth = TokenAuth("s3cret-token")
        assert auth.allows("Bearer s3cret-token")
        assert auth.allows("bearer s3cret-token")
        for header in (
            None,
            "",
            "Bearer",
            "Bearer s3cret",
            "Bearer s3cret-token2",
            "Basic s3cret-token",
            "s3cret-token",
        ):
            assert not auth.allows(header), header

    def test_without_a_token_everything_is_refused(self) -> None:
        """No token configured: no header can pass."""
        auth = TokenAuth.from_file(None, "worker.web_token_file")
        assert not auth.configured
        assert not auth.allows("Bearer ")
        assert not auth.allows("Bearer None")

    def test_the_token_is_never_shown(self) -> None:
        """repr() names whether a token is set, never the token."""
        assert "s3cret" not in repr(TokenAuth("s3cret-token"))


class TestReadToken:
    def test_first_line_stripped(self, tmp_path: Path) -> None:
        """The token is the file's first line, without surrounding whitespace."""
        path = tmp_path / "token"
        path.write_text("  abc123 \nsecond line\n")
        assert read_token(path, "http.token_file") == "abc123"
        assert TokenAuth.from_file(path, "http.token_file").allows("Bearer abc123")

    def test_missing_or_empty_file_is_a_config_error_without_the_token(
        self, tmp_path: Path
    ) -> None:
        """An unreadable or empty file stops the start, naming the setting."""
        with pytest.raises(ConfigError, match=r"http\.token_file"):
            read_token(tmp_path / "absent", "http.token_file")
        empty = tmp_path / "empty"
        empty.write_text("\n \n")
        with pytest.raises(ConfigError, match="holds no token"):
            read_token(empty, "http.token_file")


class TestServerSslContext:
    def test_no_certificate_means_plain_http(self) -> None:
        """Without a certificate there is no TLS context; a key alone is an error."""
        assert server_ssl_context(None, None, section="metrics.tls") is None
        with pytest.raises(ConfigError, match=r"metrics\.tls"):
            server_ssl_context(None, Path("key.pem"), section="metrics.tls")

    def test_unloadable_certificate_is_a_config_error(self, tmp_path: Path) -> None:
        """A certificate that cannot be loaded stops the start."""
        bad = tmp_path / "cert.pem"
        bad.write_text("not a certificate")
        with pytest.raises(ConfigError, match=r"worker\.web_tls"):
            server_ssl_context(bad, None, section="worker.web_tls")
