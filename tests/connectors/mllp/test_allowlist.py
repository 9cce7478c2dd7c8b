"""Tests for connectors/mllp/allowlist.py: which peer may send as which facility."""

from __future__ import annotations

from pathlib import Path

import pytest

from carebus.errors import ConfigError
from connectors.mllp.allowlist import Allowlist, Peer, load_allowlist

DOC = """
peers:
  - cn: engine.trust-a.example
    facilities: [RXA01, RXA02]
  - san: mirth.trust-b.example
    facilities: [RXB]
  - ip: 10.20.0.0/16
    facilities: ["*"]
"""


@pytest.fixture
def allowlist(tmp_path: Path) -> Allowlist:
    path = tmp_path / "senders.yaml"
    path.write_text(DOC, encoding="utf-8")
    loaded = load_allowlist(path)
    assert loaded is not None
    return loaded


class TestAllowlist:
    def test_certificate_cn_allows_its_facilities_only(self, allowlist: Allowlist) -> None:
        """A peer identified by certificate CN may use its facilities and no others."""
        peer = Peer("mllp", "192.0.2.1", common_name="Engine.Trust-A.example")
        assert allowlist.allows(peer, "RXA01")
        assert allowlist.allows(peer, "RXA02")
        assert not allowlist.allows(peer, "RXB")

    def test_subject_alt_name_matches(self, allowlist: Allowlist) -> None:
        """A DNS name in the certificate's subjectAltName identifies the peer."""
        peer = Peer("mllp", "192.0.2.2", alt_names=("other.example", "mirth.trust-b.example"))
        assert allowlist.allows(peer, "RXB")
        assert not allowlist.allows(peer, "RXA01")

    def test_network_with_wildcard(self, allowlist: Allowlist) -> None:
        """A source address inside a listed network may use any facility with '*'."""
        assert allowlist.allows(Peer("mllp", "10.20.3.4"), "ANYTHING")
        assert not allowlist.allows(Peer("mllp", "10.21.3.4"), "ANYTHING")

    def test_unknown_peer_may_send_as_nobody(self, allowlist: Allowlist) -> None:
        """A peer that matches no entry is refused every facility."""
        assert not allowlist.allows(Peer("http", "198.51.100.7"), "RXA01")

    def test_no_file_means_no_allowlist(self) -> None:
        """Without a configured file there is no allow-list (everyone allowed)."""
        assert load_allowlist(None) is None

    @pytest.mark.parametrize(
        "doc",
        [
            "peers: nope",
            "peers:\n  - facilities: [A]",
            "peers:\n  - cn: x\n    ip: 1.2.3.4\n    facilities: [A]",
            "peers:\n  - ip: not-an-ip\n    facilities: [A]",
            "peers:\n  - cn: x\n    facilities: []",
            "peers:\n  - cn: x\n    facilities: [A]\n    colour: red",
        ],
    )
    def test_invalid_documents_are_config_errors(self, tmp_path: Path, doc: str) -> None:
        """Malformed allow-lists fail at start-up with a ConfigError."""
        path = tmp_path / "bad.yaml"
        path.write_text(doc, encoding="utf-8")
        with pytest.raises(ConfigError):
            load_allowlist(path)


class TestPeer:
    def test_from_certificate(self) -> None:
        """CN and subjectAltName values are taken from getpeercert()'s dictionary."""
        cert = {
            "subject": ((("countryName", "GB"),), (("commonName", "engine.example"),)),
            "subjectAltName": (("DNS", "engine.example"), ("IP Address", "10.0.0.9")),
        }
        peer = Peer.from_certificate("mllp", "10.0.0.9", 5000, cert)
        assert peer.common_name == "engine.example"
        assert peer.alt_names == ("engine.example", "10.0.0.9")
        assert peer.describe() == "10.0.0.9:5000;cn=engine.example"
