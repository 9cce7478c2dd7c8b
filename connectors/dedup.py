"""Recognise a message sent again: the same (sending facility, MSH-10) within a window.

Senders resend when an ACK is lost. A resend of a message already durably published
gets AA again but is not published twice. Two more cases matter:

* a copy still *in doubt* -- its publish timed out (the sender got AE) but the
  producer may still deliver it once Kafka is back. A resend must not publish a
  second copy while the first may still land: the caller waits for the first
  attempt, and answers AE again if it is still undecided.
* memory is bounded: at most ``max_entries`` keys are remembered; beyond that the
  oldest are forgotten before the window ends.

Limit: the memory is per process and is not rebuilt on start, so a resend that
crosses a listener restart is published again. Event ids are deterministic (the
same message always gives the same ids), so consumers can drop such a copy. Seeding
from the raw topic would not be sound: a raw record is written before the message's
events, so its presence does not prove the events were published.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

Key = tuple[str, str]


class Deduplicator:
    """Remembers published (sending facility, control id) keys for ``window_s`` seconds."""

    def __init__(
        self,
        window_s: float,
        *,
        max_entries: int = 500_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[Key, float] = OrderedDict()
        self._pending: dict[Key, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def is_duplicate(self, key: Key) -> bool:
        """True when ``key`` was published within the window."""
        self._expire()
        return key in self._seen

    def remember(self, key: Key) -> None:
        """Record that ``key`` has been durably published now."""
        self._seen[key] = self._clock()
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)

    def in_doubt(self, key: Key) -> asyncio.Future[None] | None:
        """The unfinished publish of an earlier copy of ``key``, if there is one."""
        return self._pending.get(key)

    def track(self, key: Key, attempt: asyncio.Future[None]) -> None:
        """Follow a publish of ``key``: remembered when it succeeds, dropped when it fails."""
        self._pending[key] = attempt

        def settle(fut: asyncio.Future[None]) -> None:
            if self._pending.get(key) is fut:
                del self._pending[key]
            if not fut.cancelled() and fut.exception() is None:
                self.remember(key)

        attempt.add_done_callback(settle)

    def _expire(self) -> None:
        if self._window_s <= 0:
            self._seen.clear()
            return
        horizon = self._clock() - self._window_s
        while self._seen:
            stamp = next(iter(self._seen.values()))
            if stamp > horizon:
                break
            self._seen.popitem(last=False)
