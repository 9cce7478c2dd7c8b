"""Tests for connectors/dedup.py (resends by ids and content within a window) and the
pipeline's per-peer dead-letter budget (pure, no broker)."""

from __future__ import annotations

import asyncio

from connectors.dedup import (
    CONFLICT,
    DUPLICATE,
    NEW,
    UNCONFIRMED,
    Deduplicator,
    content_digest,
    msh7_span,
    with_msh7,
)
from tests.connectors.ingest_helpers import adt

D1 = "d1" * 16
D2 = "d2" * 16


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestContentDigest:
    def test_a_resend_with_a_new_msh7_has_the_same_digest(self) -> None:
        """MSH-7 is ignored: engines restamp it when they resend."""
        raw = adt("C1")
        resent = raw.replace(b"|20260301093000||ADT", b"|20260301101500+0000||ADT", 1)
        assert resent != raw
        assert content_digest(resent) == content_digest(raw)

    def test_framing_and_line_endings_are_ignored(self) -> None:
        """MLLP blocks, a BOM, trailing terminators and CR/LF/CRLF make no difference."""
        raw = adt("C2")
        variants = [
            b"\x0b" + raw + b"\x1c\r",
            b"\xef\xbb\xbf" + raw,
            raw.rstrip(b"\r"),
            raw.replace(b"\r", b"\r\n"),
            raw.replace(b"\r", b"\n"),
        ]
        assert {content_digest(v) for v in variants} == {content_digest(raw)}

    def test_any_other_change_changes_the_digest(self) -> None:
        """A different sending application, event time or patient is different content."""
        raw = adt("C3")
        others = [
            raw.replace(b"MSH|^~\\&|PAS|", b"MSH|^~\\&|LIMS|"),
            raw.replace(b"EVN|A01|20260301093000", b"EVN|A01|20260301093001"),
            adt("C3", nhs_number="9434765870"),
            raw.replace(b"TEST^PATIENT", b"TEST^PATIENT "),
        ]
        digests = {content_digest(o) for o in others}
        assert len(digests) == len(others)
        assert content_digest(raw) not in digests

    def test_trailing_content_bytes_are_not_stripped_as_framing(self) -> None:
        """Only framing and terminators go from the end: a last field ending in spaces, a
        tab or a latin-1 byte that is also a BOM byte (0xEF, 0xBB, 0xBF) is other content."""
        raw = adt("C5").rstrip(b"\r")
        others = [raw + b"  ", raw + b"\t", raw + b"\xbb", raw + b"\xbf", raw + b"\xef"]
        others += [o + b"\r" for o in others] + [b"\x0b" + o + b"\x1c\r" for o in others]
        assert content_digest(raw) not in {content_digest(o) for o in others}
        assert len({content_digest(o) for o in others}) == 5  # framing still ignored

    def test_msh7_is_found_and_replaced(self) -> None:
        """msh7_span finds MSH-7's value; with_msh7 puts another in its place."""
        raw = adt("C4")
        start, end = msh7_span(raw)
        assert raw[start:end] == b"20260301093000"
        assert with_msh7(raw, b"20991231") == raw.replace(b"20260301093000||", b"20991231||", 1)
        assert msh7_span(b"MSH|^~\\&|A|B") == (0, 0)
        last = b"\x0bMSH|^~\\&|A|B|C|D|20260101"
        start, end = msh7_span(last)
        assert last[start:end] == b"20260101" and end == len(last)
        assert msh7_span(b"garbage") == (0, 0)


class TestDeduplicator:
    def test_same_ids_and_content_is_duplicate_within_window(self) -> None:
        """A (key, digest) published within the window is a duplicate; after it, new."""
        clock = Clock()
        dedup = Deduplicator(60, clock=clock)
        dedup.remember(("RXA", "1"), D1)
        clock.now += 59
        assert dedup.check(("RXA", "1"), D1)[0] == DUPLICATE
        assert dedup.check(("RXB", "1"), D1)[0] == NEW
        clock.now += 2
        assert dedup.check(("RXA", "1"), D1)[0] == NEW

    def test_same_ids_different_content_is_a_conflict_and_both_are_remembered(self) -> None:
        """Another digest under a known key is a conflict naming the earlier digest; once
        stored, a resend of either is a duplicate."""
        dedup = Deduplicator(60, clock=Clock())
        dedup.remember(("RXA", "1"), D1)
        status, other = dedup.check(("RXA", "1"), D2)
        assert status == CONFLICT
        assert other is not None and other.digest == D1
        dedup.remember(("RXA", "1"), D2)
        assert dedup.is_duplicate(("RXA", "1"), D1)
        assert dedup.is_duplicate(("RXA", "1"), D2)

    def test_memory_is_bounded(self) -> None:
        """Beyond max_entries the oldest keys are forgotten."""
        dedup = Deduplicator(3600, max_entries=3, clock=Clock())
        for n in range(5):
            dedup.remember(("RXA", str(n)), D1)
        assert len(dedup) == 3
        assert not dedup.is_duplicate(("RXA", "0"), D1)
        assert dedup.is_duplicate(("RXA", "4"), D1)

    def test_restored_entry_is_unconfirmed_until_confirmed(self) -> None:
        """An entry rebuilt from the raw topic answers UNCONFIRMED with its MSH-7 and
        received time, and DUPLICATE once confirmed."""
        dedup = Deduplicator(60, clock=Clock())
        dedup.restore(("RXA", "1"), D1, b"20260301093000", "2026-03-01T09:30:00+00:00", 10.0)
        status, seen = dedup.check(("RXA", "1"), D1)
        assert status == UNCONFIRMED
        assert seen is not None
        assert (seen.msh7, seen.received) == (b"20260301093000", "2026-03-01T09:30:00+00:00")
        dedup.confirm(("RXA", "1"), D1)
        assert dedup.check(("RXA", "1"), D1)[0] == DUPLICATE

    def test_restored_entry_expires_by_its_stored_age(self) -> None:
        """A record stored 50 s ago stays 10 s in a 60 s window; one older is not restored."""
        clock = Clock()
        dedup = Deduplicator(60, clock=clock)
        dedup.restore(("RXA", "old"), D1, b"", "", 61.0)
        dedup.restore(("RXA", "1"), D1, b"", "", 50.0)
        assert len(dedup) == 1
        clock.now += 9
        assert dedup.check(("RXA", "1"), D1)[0] == UNCONFIRMED
        clock.now += 2
        assert dedup.check(("RXA", "1"), D1)[0] == NEW

    async def test_successful_attempt_is_remembered(self) -> None:
        """A tracked publish that succeeds makes its (key, digest) a duplicate, no doubt left."""
        dedup = Deduplicator(60)
        attempt: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        dedup.track(("RXA", "7"), D1, attempt)
        assert dedup.in_doubt(("RXA", "7"), D1) is attempt
        assert dedup.in_doubt(("RXA", "7"), D2) is None
        assert dedup.pending_other(("RXA", "7"), D2) == D1
        assert not dedup.is_duplicate(("RXA", "7"), D1)
        attempt.set_result(None)
        await asyncio.sleep(0)
        assert dedup.is_duplicate(("RXA", "7"), D1)
        assert dedup.in_doubt(("RXA", "7"), D1) is None

    async def test_failed_attempt_is_forgotten(self) -> None:
        """A tracked publish that fails leaves the key free to be published again."""
        dedup = Deduplicator(60)
        attempt: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        dedup.track(("RXA", "8"), D1, attempt)
        attempt.set_exception(RuntimeError("boom"))
        await asyncio.sleep(0)
        assert not dedup.is_duplicate(("RXA", "8"), D1)
        assert dedup.in_doubt(("RXA", "8"), D1) is None
        assert dedup.pending_other(("RXA", "8"), D2) is None

    async def test_a_held_place_is_in_flight_until_tracked_or_released(self) -> None:
        """A held placeholder is in doubt for its digest and a conflict for another, is
        replaced by the tracked attempt, is dropped on release, and is never remembered."""
        loop = asyncio.get_running_loop()
        dedup = Deduplicator(60)
        key = ("RXA", "9")
        placeholder: asyncio.Future[None] = loop.create_future()
        dedup.hold(key, D1, placeholder)
        assert dedup.in_doubt(key, D1) is placeholder
        assert dedup.pending_other(key, D2) == D1
        attempt: asyncio.Future[None] = loop.create_future()
        dedup.track(key, D1, attempt)
        placeholder.set_result(None)
        assert dedup.in_doubt(key, D1) is attempt
        dedup.release(key, D1, placeholder)  # not its place any more: nothing changes
        assert dedup.in_doubt(key, D1) is attempt
        other: asyncio.Future[None] = loop.create_future()
        dedup.hold(("RXA", "10"), D1, other)
        dedup.release(("RXA", "10"), D1, other)
        other.set_result(None)
        assert dedup.in_doubt(("RXA", "10"), D1) is None
        assert dedup.check(("RXA", "10"), D1)[0] == NEW


class TestDeadLetterLimit:
    def test_drops_are_logged_once_per_interval_per_peer(self) -> None:
        """Over its budget a peer's drops are logged at once, then at most once a minute,
        with how many were dropped since."""
        from structlog.testing import capture_logs

        from connectors.pipeline import DeadLetterLimit

        clock = Clock()
        limit = DeadLetterLimit(1, clock=clock, log_interval_s=60.0)
        with capture_logs() as logs:
            allowed = [limit.allow("10.0.0.9", "unparseable") for _ in range(5)]
            clock.now += 61.0  # one more token, then three more drops
            allowed += [limit.allow("10.0.0.9", "unparseable") for _ in range(4)]
        assert allowed == [True, False, False, False, False, True, False, False, False]
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert [(w["peer"], w["dropped"]) for w in warnings] == [("10.0.0.9", 1), ("10.0.0.9", 4)]
