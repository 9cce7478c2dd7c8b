"""Tests for connectors/hl7/__init__.py: the public surface."""

from __future__ import annotations

import connectors.hl7


class TestPublicApi:
    def test_all_is_exactly_the_public_surface(self) -> None:
        """__all__ lists what the package means to export, and each name exists."""
        assert sorted(connectors.hl7.__all__) == [
            "DEFAULT_ENCODING",
            "DEFAULT_FALLBACK",
            "Encoding",
            "FeedItem",
            "FramingError",
            "Layout",
            "Message",
            "MllpDecoder",
            "Segment",
            "StrictValidationFailed",
            "StrictValidator",
            "codec_for",
            "escape",
            "frame",
            "iter_feed",
            "parse_message",
            "unescape",
            "validate_strict",
        ]
        for name in connectors.hl7.__all__:
            assert getattr(connectors.hl7, name) is not None

    def test_importing_does_not_load_hl7apy(self) -> None:
        """hl7apy stays off the hot path: importing the package does not import it."""
        import subprocess
        import sys

        code = "import sys, connectors.hl7; print('hl7apy' in sys.modules)"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "False"
