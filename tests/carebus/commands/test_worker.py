"""Tests for carebus/commands/worker.py: the event loop the worker runs on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from carebus.commands.worker import use_event_loop
from carebus.settings import WorkerSettings


@pytest.fixture(autouse=True)
def restore_policy() -> Iterator[None]:
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)


class TestUseEventLoop:
    def test_auto_installs_uvloop_when_it_is_installed(self) -> None:
        """The default ``auto`` makes new event loops uvloop's."""
        asyncio.set_event_loop_policy(None)
        use_event_loop(WorkerSettings())
        assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)

    def test_asyncio_leaves_the_default_loop(self) -> None:
        """``asyncio`` keeps asyncio's own event loop policy."""
        asyncio.set_event_loop_policy(None)
        use_event_loop(WorkerSettings(event_loop="asyncio"))
        assert not isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
