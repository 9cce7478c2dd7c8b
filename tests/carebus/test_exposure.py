"""Tests for carebus/exposure.py: which surfaces may bind off the loopback interface."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from carebus.errors import ConfigError
from carebus.exposure import (
    COMPONENTS,
    assess,
    check_components,
    enforce,
    is_loopback,
    readiness_check,
)
from carebus.settings import Settings

CERT, CA, SENDERS = Path("cert.pem"), Path("ca.pem"), Path("senders.yaml")


def settings(**sections: dict[str, Any]) -> Settings:
    """Default settings with some fields of some sections replaced."""
    base = Settings()
    return base.replace(
        **{
            name: dataclasses.replace(getattr(base, name), **fields)
            for name, fields in sections.items()
        }
    )


class TestIsLoopback:
    @pytest.mark.parametrize(
        ("host", "loopback"),
        [
            ("127.0.0.1", True),
            ("127.0.0.53", True),
            ("::1", True),
            ("[::1]", True),
            ("localhost", True),
            ("LOCALHOST", True),
            ("0.0.0.0", False),
            ("::", False),
            ("", False),
            ("10.1.2.3", False),
            ("carebus.nhs.example", False),
        ],
    )
    def test_only_loopback_addresses_and_names_count(self, host: str, loopback: bool) -> None:
        """Loopback addresses and localhost count; wildcards, other addresses and names do not."""
        assert is_loopback(host) is loopback


#: (component, settings sections, refused?, allowed?, what the problems mention)
CASES: list[tuple[str, dict[str, dict[str, Any]], bool, tuple[str, ...]]] = [
    # defaults: everything on loopback
    ("mllp", {}, False, ()),
    ("http", {}, False, ()),
    ("metrics", {}, False, ()),
    ("dashboard", {}, False, ()),
    ("worker.web", {}, False, ()),
    # mllp off loopback: TLS and (client CA or allow-list)
    (
        "mllp",
        {"mllp": {"host": "0.0.0.0"}},
        True,
        ("mllp.tls_certfile", "mllp.allowed_senders_file"),
    ),
    (
        "mllp",
        {"mllp": {"host": "0.0.0.0", "tls_certfile": CERT}},
        True,
        ("mllp.tls_client_cafile",),
    ),
    (
        "mllp",
        {"mllp": {"host": "10.0.0.5", "allowed_senders_file": SENDERS}},
        True,
        ("mllp.tls_certfile",),
    ),
    (
        "mllp",
        {"mllp": {"host": "0.0.0.0", "tls_certfile": CERT, "tls_client_cafile": CA}},
        False,
        (),
    ),
    (
        "mllp",
        {"mllp": {"host": "0.0.0.0", "tls_certfile": CERT, "allowed_senders_file": SENDERS}},
        False,
        (),
    ),
    ("mllp", {"mllp": {"host": "0.0.0.0", "allow_insecure": True}}, False, ("mllp.tls_certfile",)),
    # http ingest: its own TLS, its client CA or the shared allow-list
    ("http", {"http": {"host": "0.0.0.0"}}, True, ("http.tls_certfile", "http.tls_client_cafile")),
    (
        "http",
        {"http": {"host": "0.0.0.0", "tls_certfile": CERT, "tls_client_cafile": CA}},
        False,
        (),
    ),
    (
        "http",
        {
            "http": {"host": "0.0.0.0", "tls_certfile": CERT},
            "mllp": {"allowed_senders_file": SENDERS},
        },
        False,
        (),
    ),
    (
        "http",
        {"http": {"host": "0.0.0.0", "tls_certfile": CERT}, "mllp": {"allow_insecure": True}},
        True,
        ("http.tls_client_cafile",),
    ),
    ("http", {"http": {"host": "0.0.0.0", "allow_insecure": True}}, False, ("http.tls_certfile",)),
    # health, metrics and dashboard: TLS
    ("metrics", {"metrics": {"host": "0.0.0.0"}}, True, ("metrics.tls_certfile",)),
    ("dashboard", {"metrics": {"host": "0.0.0.0"}}, True, ("metrics.tls_certfile",)),
    ("metrics", {"metrics": {"host": "0.0.0.0", "tls_certfile": CERT}}, False, ()),
    (
        "metrics",
        {"metrics": {"host": "0.0.0.0", "allow_insecure": True}},
        False,
        ("metrics.tls_certfile",),
    ),
    # worker web: TLS (the token alone travels in clear text)
    ("worker.web", {"worker": {"web_host": "0.0.0.0"}}, True, ("worker.web_tls_certfile",)),
    ("worker.web", {"worker": {"web_host": "0.0.0.0", "web_tls_certfile": CERT}}, False, ()),
    (
        "worker.web",
        {"worker": {"web_host": "0.0.0.0", "allow_insecure": True}},
        False,
        ("worker.web_tls_certfile",),
    ),
    # another component's override does not count
    (
        "worker.web",
        {"worker": {"web_host": "0.0.0.0"}, "metrics": {"allow_insecure": True}},
        True,
        ("worker.web_tls_certfile",),
    ),
    # TLS settings do not matter on loopback
    ("mllp", {"mllp": {"host": "::1"}}, False, ()),
]


class TestAssess:
    @pytest.mark.parametrize(("component", "sections", "refused", "mentions"), CASES)
    def test_off_loopback_needs_the_components_protection(
        self,
        component: str,
        sections: dict[str, dict[str, Any]],
        refused: bool,
        mentions: tuple[str, ...],
    ) -> None:
        """Off loopback a surface needs its protection, unless its own override is set."""
        surface = assess(settings(**sections), component)
        assert surface.refused is refused
        assert surface.insecure is bool(mentions)
        problems = " ".join(surface.problems)
        for name in mentions:
            assert name in problems

    def test_an_explicit_host_overrides_the_setting(self) -> None:
        """The dashboard's --host is judged, not metrics.host."""
        assert assess(Settings(), "dashboard", host="0.0.0.0").refused
        assert not assess(
            settings(metrics={"host": "0.0.0.0"}), "dashboard", host="127.0.0.1"
        ).insecure

    def test_every_component_is_known(self) -> None:
        """Each listed component can be assessed; an unknown one is a programming error."""
        for component in COMPONENTS:
            assert assess(Settings(), component).component == component
        with pytest.raises(ValueError):
            assess(Settings(), "ftp")


class TestEnforce:
    def test_a_refused_surface_is_a_one_line_config_error(self) -> None:
        """The error names the surface, the address, what is missing and the override."""
        with pytest.raises(ConfigError) as info:
            check_components(settings(mllp={"host": "0.0.0.0"}), ["metrics", "mllp"])
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith("refusing to start: mllp on 0.0.0.0 has no TLS")
        assert "mllp.allow_insecure = true" in message

    def test_allowed_surfaces_start_and_are_logged(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An override lets the component start, with a warning naming what is missing."""
        surfaces = enforce(
            [assess(settings(mllp={"host": "0.0.0.0", "allow_insecure": True}), "mllp")]
        )
        assert [s.component for s in surfaces] == ["mllp"]
        out = capsys.readouterr()
        assert "exposure.insecure" in out.out + out.err


class TestReadinessCheck:
    async def test_readyz_names_insecure_surfaces(self) -> None:
        """The exposure check stays ok and its detail names each surface started insecure."""
        s = settings(mllp={"host": "0.0.0.0", "allow_insecure": True})
        result = await readiness_check([assess(s, "mllp"), assess(s, "metrics")])()
        assert result.ok
        assert result.detail.startswith("insecure (allow_insecure): mllp on 0.0.0.0")
        assert "metrics" not in result.detail

    async def test_readyz_says_when_all_is_protected(self) -> None:
        """Without overrides in use, the detail says every surface is loopback or protected."""
        result = await readiness_check([assess(Settings(), "worker.web")])()
        assert result == result.__class__(True, "loopback or protected: worker.web")
