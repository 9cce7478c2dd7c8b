"""``carebus simulate FEED... --config REGION.yaml [--until ISO8601]``.

Runs the coordination rules over HL7 v2 feeds offline (see :mod:`carebus.simulate`).
Standard output gets the alerts, one JSON object per line, in the order raised.
Standard error gets one line per message that could not be used::

    FILE:POSITION: REASON (control id CONTROL_ID): DETAIL

and last ``N messages: E events, R rejected, A alerts``. A FEED of ``-`` is
standard input. Exit status 0 when every feed was read, 2 for a usage error or an
unreadable feed or region config (the readable feeds are still simulated).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from carebus.settings import Settings

EXIT_UNREADABLE = 2
LONDON = ZoneInfo("Europe/London")


def parse_until(text: str) -> datetime:
    """An ISO 8601 moment; without a UTC offset it is Europe/London wall-clock time."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date and time: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=LONDON)
    return moment.astimezone(UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "feeds",
        metavar="FEED",
        nargs="+",
        help="HL7 v2 feed file: MLLP-framed, plain, or FHS/BHS batch ('-' for standard input)",
    )
    parser.add_argument(
        "--config",
        dest="region",
        metavar="REGION.yaml",
        type=Path,
        required=True,
        help="region config: providers and code lists",
    )
    parser.add_argument(
        "--until",
        type=parse_until,
        default=None,
        metavar="ISO8601",
        help="move the clock here at the end and fire what is due "
        "(default: the last event time; no offset means Europe/London)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from carebus.simulate import FeedRun, Rejection, batch_gc
    from streams.alert import Alert
    from streams.region import load_region

    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    region = load_region(args.region)  # ConfigError -> exit 2 in carebus.cli
    unreadable: list[str] = []

    def alert(a: Alert) -> None:
        out.write(a.to_json())
        out.write("\n")

    def rejection(r: Rejection) -> None:
        err.write(r.line())
        err.write("\n")

    def feeds(names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        for name in names:
            try:
                data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
            except OSError as exc:
                err.write(f"carebus simulate: cannot read {name}: {exc.strerror or exc}\n")
                unreadable.append(name)
                continue
            yield name, data

    feed_run = FeedRun(
        region=region,
        received_time=datetime.now(UTC),
        fallback_charset=settings.translate.fallback_charset,
        on_alert=alert,
        on_rejection=rejection,
    )
    with batch_gc():
        feed_run.run(feeds(args.feeds), until=args.until)
    out.flush()
    stats = feed_run.stats
    err.write(
        f"{stats.messages} messages: {stats.events} events, {stats.rejected} rejected, "
        f"{stats.alerts} alerts\n"
    )
    err.flush()
    return EXIT_UNREADABLE if unreadable else 0
