"""Which peer may send as which sending facility (MSH-4.1).

One provider must not be able to send as another. The allow-list maps a peer
identity (the TLS client certificate's subject CN or a subjectAltName, or the
source address or network) to the facilities it may use::

    peers:
      - cn: engine.trust-a.example     # TLS client certificate subject CN
        facilities: [RXA01, RXA02]
      - san: mirth.trust-b.example     # a DNS name or IP address in subjectAltName
        facilities: [RXB]
      - ip: 10.20.0.0/16               # source address or network
        facilities: ["*"]              # any facility

A peer may use the union of the facilities of every entry it matches; a peer that
matches no entry may send as nobody. Without a file (``allowed_senders_file``
unset) every peer may send as any facility.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from carebus.errors import ConfigError

ANY = "*"


@dataclass(frozen=True)
class Peer:
    """Who sent a message, as far as the edge can tell."""

    #: ``mllp``, ``http`` or ``file``.
    source: str
    #: Source IP address (or the drop folder for ``file``).
    address: str
    port: int | None = None
    #: TLS client certificate subject CN, when the peer presented one.
    common_name: str | None = None
    #: TLS client certificate subjectAltName values (DNS names and IP addresses).
    alt_names: tuple[str, ...] = ()

    def describe(self) -> str:
        """A short identity for headers and logs: ``10.0.0.7:50312;cn=engine.example``."""
        text = self.address if self.port is None else f"{self.address}:{self.port}"
        if self.common_name:
            text += f";cn={self.common_name}"
        return text

    @classmethod
    def from_certificate(
        cls, source: str, address: str, port: int | None, cert: Mapping[str, Any] | None
    ) -> Peer:
        """Build a peer from an address and ``SSLObject.getpeercert()`` (or None)."""
        common_name = None
        alt_names: list[str] = []
        if cert:
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        common_name = str(value)
            for kind, value in cert.get("subjectAltName", ()):
                if kind in ("DNS", "IP Address"):
                    alt_names.append(str(value))
        return cls(source, address, port, common_name, tuple(alt_names))


@dataclass(frozen=True)
class _Rule:
    facilities: frozenset[str]
    cn: str | None = None
    san: str | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    def matches(self, peer: Peer) -> bool:
        if self.cn is not None:
            return peer.common_name is not None and peer.common_name.lower() == self.cn
        if self.san is not None:
            return any(name.lower() == self.san for name in peer.alt_names)
        if self.network is not None:
            try:
                return ipaddress.ip_address(peer.address) in self.network
            except ValueError:
                return False
        return False


class Allowlist:
    """Answers "may this peer send as this facility?"."""

    def __init__(self, rules: Sequence[_Rule]) -> None:
        self._rules = tuple(rules)

    def allows(self, peer: Peer, facility: str) -> bool:
        """True when ``peer`` may send messages whose MSH-4.1 is ``facility``."""
        for rule in self._rules:
            if rule.matches(peer) and (ANY in rule.facilities or facility in rule.facilities):
                return True
        return False

    def knows(self, peer: Peer) -> bool:
        """True when ``peer`` matches an entry: it may send as some facility."""
        return any(rule.matches(peer) for rule in self._rules)

    @classmethod
    def from_mapping(cls, data: Any, *, origin: str = "allow-list") -> Allowlist:
        """Validate a parsed allow-list document (see the module docstring)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("peers"), list):
            raise ConfigError(f"{origin}: expected a mapping with a 'peers' list")
        rules = []
        for index, entry in enumerate(data["peers"], start=1):
            where = f"{origin}: peers[{index}]"
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{where}: expected a mapping")
            unknown = set(entry) - {"cn", "san", "ip", "facilities"}
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
            kinds = [k for k in ("cn", "san", "ip") if k in entry]
            if len(kinds) != 1:
                raise ConfigError(f"{where}: give exactly one of cn, san, ip")
            facilities = entry.get("facilities")
            if not isinstance(facilities, list) or not facilities:
                raise ConfigError(f"{where}: 'facilities' must be a non-empty list")
            names = frozenset(str(f).strip() for f in facilities)
            value = str(entry[kinds[0]]).strip()
            if not value:
                raise ConfigError(f"{where}: empty {kinds[0]}")
            if kinds[0] == "ip":
                try:
                    network = ipaddress.ip_network(value, strict=False)
                except ValueError as exc:
                    raise ConfigError(f"{where}: {value!r} is not an address or network") from exc
                rules.append(_Rule(names, network=network))
            elif kinds[0] == "cn":
                rules.append(_Rule(names, cn=value.lower()))
            else:
                rules.append(_Rule(names, san=value.lower()))
        return cls(rules)


def load_allowlist(path: Path | None) -> Allowlist | None:
    """Load the allow-list YAML file; None (everyone allowed) when no file is configured."""
    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read allow-list {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"allow-list {path} is not valid YAML") from exc
    return Allowlist.from_mapping(data, origin=str(path))
