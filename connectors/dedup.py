"""Recognise a message sent again: the same ids *and* the same content within a window.

Senders resend when an ACK is lost. A resend of a message already durably published
gets AA again but is not published twice. A *duplicate* is a message with

* the same sending facility (MSH-4.1) and control id (MSH-10) -- the key -- and
* the same content digest (:func:`content_digest`), which covers every byte of the
  message, MSH-3 (sending application) and the whole of MSH-4 included, except what
  a resend legitimately changes:

  - MSH-7 (date/time of message): engines restamp it when they resend;
  - the framing: MLLP start and end blocks, a leading byte-order mark or
    whitespace, and trailing segment terminators (CR, LF; trailing spaces, tabs
    or other bytes are content);
  - line endings: CR, LF and CRLF between segments are the same.

  Nothing else is ignored: a changed field anywhere else (EVN-2, a result value,
  trailing spaces) makes a different message.

The same key with a *different* digest is a **control id conflict**: two systems of
one facility (a trust's PAS and LIMS commonly share MSH-4 and run separate MSH-10
counters) or a sender that reused a control id. It is a different message, so it is
published like any other (the pipeline marks it); the window then holds both digests
under the key, and a resend of either is a duplicate.

Two more cases matter:

* a copy still *in doubt* -- its publish timed out (the sender got AE) but the
  producer may still deliver it once Kafka is back. A resend of the same content
  must not publish a second copy while the first may still land: the caller waits
  for the first attempt, and answers AE again if it is still undecided. The
  pipeline holds a message's place (:meth:`Deduplicator.hold`) as soon as it has
  been checked, before anything awaits, so this holds from the check on: while the
  first copy is still being enqueued too (then :meth:`Deduplicator.track` follows
  the real attempt).
* memory is bounded: at most ``max_entries`` keys are remembered; beyond that the
  oldest are forgotten before the window ends.

Entries are *confirmed* (every record of the message acknowledged by Kafka in this
process) or *restored* (:meth:`Deduplicator.restore`: rebuilt at start from the raw
topic by :mod:`connectors.window`). A restored entry proves only that the raw record
was stored: the raw record and the events go in one send, but not atomically, so a
process killed in between may have stored the raw record without every event. A
resend that matches a restored entry is therefore answered *unconfirmed*, with the
original MSH-7 and received time, so the pipeline can publish the events again
(same bytes, same deterministic ids) before answering duplicate; it then calls
:meth:`Deduplicator.confirm`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

#: (sending facility MSH-4.1, control id MSH-10)
Key = tuple[str, str]

#: What :meth:`Deduplicator.check` says about a message.
NEW = "new"
DUPLICATE = "duplicate"
UNCONFIRMED = "unconfirmed"
CONFLICT = "conflict"

_CR = b"\r"
_TERMINATORS = b"\r\n"
#: Stripped from the start only: a byte-order mark, MLLP blocks, whitespace.
_LEADING = b"\xef\xbb\xbf\x0b\x1c \t\r\n"
#: Stripped from the end only: MLLP blocks and segment terminators (a trailing space,
#: tab or 0xEF/0xBB/0xBF there is the last field's content).
_TRAILING = b"\x1c\x0b\r\n"
#: Copied for each digest: cheaper than building the hash with its parameters each time.
_SEED = hashlib.blake2b(digest_size=16)


def content_digest(raw: bytes) -> str:
    """The hex digest (BLAKE2b, 128 bits) of ``raw`` without MSH-7, framing and line endings."""
    start, end = msh7_span(raw)
    data = raw[:start] + raw[end:] if end > start else raw
    if data[:1] in _LEADING:
        data = data.lstrip(_LEADING)
    if data[-1:] in _TRAILING:
        data = data.rstrip(_TRAILING)
    if b"\n" in data:
        data = data.replace(b"\r\n", _CR).replace(b"\n", _CR)
    h = _SEED.copy()
    h.update(data)
    return h.hexdigest()


def msh7_span(raw: bytes) -> tuple[int, int]:
    """Where MSH-7's value lies in ``raw`` (start, end); (0, 0) when there is none."""
    at = 0 if raw.startswith(b"MSH") else raw.find(b"MSH", 0, 64)
    if at < 0 or len(raw) < at + 4:
        return 0, 0
    sep = raw[at + 3 : at + 4]
    if sep in _TERMINATORS:
        return 0, 0
    line_end = raw.find(_CR, at)
    if line_end < 0:
        line_end = len(raw)
    lf = raw.find(b"\n", at, line_end)
    if lf >= 0:
        line_end = lf
    # MSH-2 follows MSH-1 (the separator itself): fields are MSH-2 .. MSH-7, then the rest.
    fields = raw[at + 4 : line_end].split(sep, 6)
    if len(fields) < 6:
        return 0, 0
    start = at + 9 + len(fields[0]) + len(fields[1]) + len(fields[2])
    start += len(fields[3]) + len(fields[4])
    return start, start + len(fields[5])


def with_msh7(raw: bytes, msh7: bytes) -> bytes:
    """``raw`` with MSH-7's value replaced by ``msh7`` (unchanged when it has no MSH-7)."""
    start, end = msh7_span(raw)
    if start == 0:
        return raw
    return raw[:start] + msh7 + raw[end:]


class Seen:
    """One stored message under a key: its digest, and if restored, its original MSH-7."""

    __slots__ = ("confirmed", "digest", "msh7", "received")

    def __init__(self, digest: str, msh7: bytes, received: str, confirmed: bool) -> None:
        self.digest = digest
        #: MSH-7 as stored (restored entries only; empty when confirmed here).
        self.msh7 = msh7
        #: ``carebus-received-time`` of the stored copy (restored entries only).
        self.received = received
        self.confirmed = confirmed


class Deduplicator:
    """Remembers published (key, digest) pairs for ``window_s`` seconds."""

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
        self._seen: OrderedDict[Key, tuple[float, list[Seen]]] = OrderedDict()
        self._pending: dict[Key, dict[str, asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    @property
    def window_s(self) -> float:
        """How long a key is remembered."""
        return self._window_s

    @property
    def max_entries(self) -> int:
        """How many keys are remembered at most."""
        return self._max_entries

    def check(self, key: Key, digest: str) -> tuple[str, Seen | None]:
        """What a message of ``key`` and ``digest`` is: NEW, DUPLICATE, UNCONFIRMED or
        CONFLICT, with the matching entry (for CONFLICT, the latest other one)."""
        self._expire()
        found = self._seen.get(key)
        if found is None:
            return NEW, None
        entries = found[1]
        for seen in entries:
            if seen.digest == digest:
                return (DUPLICATE if seen.confirmed else UNCONFIRMED), seen
        return CONFLICT, entries[-1]

    def is_duplicate(self, key: Key, digest: str) -> bool:
        """True when ``key`` with ``digest`` was published within the window."""
        return self.check(key, digest)[0] == DUPLICATE

    def remember(self, key: Key, digest: str) -> None:
        """Record that ``key`` with ``digest`` has been durably published now."""
        self._add(key, Seen(digest, b"", "", True), self._clock())

    def restore(self, key: Key, digest: str, msh7: bytes, received: str, age_s: float) -> None:
        """Record a message found on the raw topic, stored ``age_s`` seconds ago (unconfirmed).

        Call in the order the messages were stored (oldest first).
        """
        if 0 < self._window_s <= age_s:
            return
        self._add(key, Seen(digest, msh7, received, False), self._clock() - max(age_s, 0.0))

    def confirm(self, key: Key, digest: str) -> None:
        """Mark a restored entry confirmed: its events are known to be on Kafka."""
        found = self._seen.get(key)
        if found is not None:
            for seen in found[1]:
                if seen.digest == digest:
                    seen.confirmed = True

    def _add(self, key: Key, seen: Seen, stamp: float) -> None:
        found = self._seen.get(key)
        if found is None:
            self._seen[key] = (stamp, [seen])
        else:
            entries = [s for s in found[1] if s.digest != seen.digest]
            entries.append(seen)
            self._seen[key] = (max(stamp, found[0]), entries)
            self._seen.move_to_end(key)
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)

    def in_doubt(self, key: Key, digest: str) -> asyncio.Future[None] | None:
        """The unfinished publish of an earlier copy of ``key`` and ``digest``, if any."""
        pending = self._pending.get(key)
        return None if pending is None else pending.get(digest)

    def pending_other(self, key: Key, digest: str) -> str | None:
        """The digest of another message of ``key`` being published now, if any."""
        pending = self._pending.get(key)
        if pending:
            for other in pending:
                if other != digest:
                    return other
        return None

    def hold(self, key: Key, digest: str, placeholder: asyncio.Future[None]) -> None:
        """Mark ``key`` with ``digest`` in flight before its publish has started, so that a
        resend checked meanwhile waits for ``placeholder`` (and another digest of the key
        is a conflict). Replace it with :meth:`track` or drop it with :meth:`release`,
        then complete ``placeholder``: its waiters check again. Never remembered itself.
        """
        self._pending.setdefault(key, {})[digest] = placeholder

    def release(self, key: Key, digest: str, placeholder: asyncio.Future[None]) -> None:
        """Drop ``placeholder`` (:meth:`hold`) when no publish follows it."""
        pending = self._pending.get(key)
        if pending is not None and pending.get(digest) is placeholder:
            del pending[digest]
            if not pending:
                del self._pending[key]

    def track(self, key: Key, digest: str, attempt: asyncio.Future[None]) -> None:
        """Follow a publish: remembered when it succeeds, dropped when it fails."""
        self._pending.setdefault(key, {})[digest] = attempt

        def settle(fut: asyncio.Future[None]) -> None:
            pending = self._pending.get(key)
            if pending is not None and pending.get(digest) is fut:
                del pending[digest]
                if not pending:
                    del self._pending[key]
            if not fut.cancelled() and fut.exception() is None:
                self.remember(key, digest)

        attempt.add_done_callback(settle)

    def _expire(self) -> None:
        if self._window_s <= 0:
            self._seen.clear()
            return
        horizon = self._clock() - self._window_s
        while self._seen:
            stamp = next(iter(self._seen.values()))[0]
            if stamp > horizon:
                break
            self._seen.popitem(last=False)
