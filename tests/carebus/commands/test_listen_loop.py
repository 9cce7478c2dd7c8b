"""Tests for carebus/commands/listen.py: the event loop and process count it chooses."""

from __future__ import annotations

import asyncio
import importlib.util
import os

import pytest
import uvloop

from carebus.commands import listen
from carebus.errors import ConfigError
from carebus.settings import MllpSettings


class TestEventLoop:
    def test_auto_takes_uvloop_when_installed(self) -> None:
        """By default (auto) the listener runs on uvloop, which is installed with carebus."""

        async def loop_type() -> type:
            return type(asyncio.get_running_loop())

        assert listen.run_loop(loop_type(), MllpSettings()) is uvloop.Loop

    def test_asyncio_can_be_chosen(self) -> None:
        """event_loop = asyncio runs on asyncio's own loop."""

        async def loop_type() -> type:
            return type(asyncio.get_running_loop())

        chosen = listen.run_loop(loop_type(), MllpSettings(event_loop="asyncio"))
        assert not issubclass(chosen, uvloop.Loop)

    def test_uvloop_demanded_but_missing_is_a_config_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """event_loop = uvloop without uvloop installed is a ConfigError; auto falls back."""
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name)
        )
        with pytest.raises(ConfigError, match="uvloop is not installed"):
            listen.loop_factory(MllpSettings(event_loop="uvloop"))
        assert listen.loop_factory(MllpSettings(event_loop="auto")) is None


class TestProcessCount:
    def test_count(self) -> None:
        """processes = N gives N; 0 gives one per CPU; a negative number is refused."""
        assert listen.process_count(MllpSettings(processes=3)) == 3
        assert listen.process_count(MllpSettings(processes=0)) == (os.cpu_count() or 1)
        with pytest.raises(ConfigError):
            listen.process_count(MllpSettings(processes=-1))
