"""Per-message cost of ``connectors.translate.translate`` alone, and where it goes.

Not registered in :mod:`benchmarks.__main__`: a tool for working on the translator.
Three feeds:

* ``translate``: :func:`benchmarks.bench_translate.build_feed` (corpus-derived and
  NHS-style messages);
* ``simulate``: the journeys of :mod:`benchmarks.bench_simulate`;
* ``synth``: :func:`carebus.synth.generate`, the demo feed.

Each round times parsing every message of a feed, then parsing and translating
every message (the difference is the translation, segments split cold as in a
connector), then Avro-encoding every event (:func:`schemas.codec.encode`).
Messages are dropped as they are done (holding thousands of parsed messages would
time the garbage collector instead). Prints the best round's µs per message and
per event for each stage (CPU time). With ``--profile`` it also runs cProfile over
the ``translate`` and ``synth`` feeds and prints the top functions by own time.

Run with ``python -m benchmarks.bench_translate_profile [--size N] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable
from datetime import UTC, datetime

from carebus.errors import MessageRejected
from connectors.hl7 import parse_message
from connectors.translate import Event, translate
from schemas.codec import encode

RECEIVED = datetime(2026, 1, 5, tzinfo=UTC)
ROUNDS = 5


def _feeds(size: int) -> dict[str, list[bytes]]:
    from benchmarks import bench_simulate, bench_translate
    from carebus.synth import generate

    start = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    return {
        "translate": bench_translate.build_feed(size),
        "simulate": list(bench_simulate.messages(size)),
        "synth": [raw for _, raw in generate(11, start, messages_limit=size)],
    }


def _parse_all(feed: list[bytes]) -> int:
    """Parse every message; the number parsed."""
    count = 0
    for raw in feed:
        try:
            parse_message(raw)
        except MessageRejected:
            continue
        count += 1
    return count


def _parse_translate_all(feed: list[bytes]) -> list[Event]:
    """Parse and translate every message; the events."""
    events: list[Event] = []
    for raw in feed:
        try:
            events.extend(translate(parse_message(raw), raw=raw, received_time=RECEIVED))
        except MessageRejected:
            continue
    return events


def _encode_all(events: list[Event]) -> None:
    for event in events:
        encode(event.schema, event.record)


def _best_us(feed: list[bytes], rounds: int) -> tuple[float, float, float, int]:
    """Best CPU µs per message of parsing alone and of parsing + translating, best CPU µs
    per event of encoding; the events.

    CPU time rather than wall-clock time: the machine may be shared.
    """
    parse = both = encoding = float("inf")
    events: list[Event] = []
    for _ in range(rounds):
        events = []
        start = time.process_time()
        _parse_all(feed)
        middle = time.process_time()
        events = _parse_translate_all(feed)
        end = time.process_time()
        _encode_all(events)
        encoded = time.process_time()
        parse = min(parse, (middle - start) / len(feed) * 1e6)
        both = min(both, (end - middle) / len(feed) * 1e6)
        encoding = min(encoding, (encoded - end) / max(1, len(events)) * 1e6)
    return parse, both, encoding, len(events)


def _profile(name: str, feed: list[bytes], top: int) -> None:
    profiler = cProfile.Profile()
    run: Callable[[], list[Event]] = lambda: _parse_translate_all(feed)  # noqa: E731
    profiler.runcall(run)
    print(f"-- cProfile, feed {name} ({len(feed):,} messages), by own time --", flush=True)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_translate_profile")
    parser.add_argument("--size", type=int, default=20_000, help="messages per feed")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--profile", action="store_true", help="also print cProfile tables")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    feeds = _feeds(args.size)
    for name, feed in feeds.items():
        parse, both, encoding, events = _best_us(feed, args.rounds)
        per_event = len(feed) / max(1, events)
        print(
            f"{name:<10} {len(feed):>7,} messages {events:>7,} events  parse {parse:5.1f} us, "
            f"parse + translate {both:6.1f} us: translate {both - parse:6.1f} us/message "
            f"(best of {args.rounds}); per event: parse {parse * per_event:5.1f} us, "
            f"translate {(both - parse) * per_event:5.1f} us, encode {encoding:5.1f} us",
            flush=True,
        )
    if args.profile:
        for name in ("translate", "synth"):
            _profile(name, feeds[name], args.top)


if __name__ == "__main__":
    main()
