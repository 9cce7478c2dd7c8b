"""``carebus generate``: write a synthetic regional HL7 v2 feed.

::

    carebus generate [--seed N] [--patients N | --messages N] [--start ISO8601]
                     [--out FILE|-] [--format mllp|plain] [--region-out REGION.yaml]

The feed is streamed (any size, in constant memory) and reproducible: the same
seed, start and size give the same bytes. ``--region-out`` writes the region
config whose providers the feed uses, for ``carebus simulate --config`` and the
worker. Standard error gets one summary line (counts only).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

from carebus.errors import ConfigError
from carebus.settings import Settings

#: The default first day of the feed: fixed, so the default feed never changes.
DEFAULT_START = "2026-01-05T08:00:00+00:00"
DEFAULT_PATIENTS = 500
_LONDON = ZoneInfo("Europe/London")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--patients",
        type=_positive,
        default=None,
        help=f"whole journeys of this many patients (default {DEFAULT_PATIENTS})",
    )
    size.add_argument(
        "--messages",
        type=_positive,
        default=None,
        help="exactly this many messages, from as many patients as that takes",
    )
    parser.add_argument(
        "--start",
        default=DEFAULT_START,
        metavar="ISO8601",
        help=f"when the first patient arrives (default {DEFAULT_START}; "
        "no offset means Europe/London)",
    )
    parser.add_argument(
        "--arrivals-per-day",
        type=float,
        default=None,
        metavar="N",
        help="patients whose journey starts each day, on average (default 60)",
    )
    parser.add_argument(
        "--out", default="-", metavar="FILE", help="where to write the feed ('-': standard output)"
    )
    parser.add_argument(
        "--format",
        choices=("mllp", "plain"),
        default="mllp",
        help="mllp: one MLLP frame per message; plain: messages one after another "
        "(segments end with CR)",
    )
    parser.add_argument(
        "--region-out",
        type=Path,
        default=None,
        metavar="REGION.yaml",
        help="also write the matching region config here",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from carebus.synth import DEFAULT_ARRIVALS_PER_DAY, messages, region_yaml
    from connectors.hl7.framing import frame

    start = parse_start(args.start)
    per_day = DEFAULT_ARRIVALS_PER_DAY if args.arrivals_per_day is None else args.arrivals_per_day
    if per_day <= 0:
        raise ConfigError("--arrivals-per-day must be positive")
    patients = args.patients
    if patients is None and args.messages is None:
        patients = DEFAULT_PATIENTS
    if args.region_out is not None:
        _write_text(args.region_out, region_yaml())
    feed = messages(args.seed, start, patients=patients, arrivals_per_day=per_day)
    count = 0
    try:
        with _open_out(args.out) as out:
            for message in feed:
                out.write(frame(message.raw) if args.format == "mllp" else message.raw)
                count += 1
                if args.messages is not None and count >= args.messages:
                    break
    except BrokenPipeError:
        # The reader went away (``carebus generate | head``): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    where = "standard output" if args.out == "-" else args.out
    noun = "message" if count == 1 else "messages"
    print(f"carebus generate: wrote {count} {noun} to {where}", file=sys.stderr)
    return 0


def parse_start(text: str) -> datetime:
    """An ISO 8601 moment; without a UTC offset it is Europe/London time."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(f"--start is not an ISO 8601 date and time: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_LONDON)
    return moment


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from exc
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


@contextlib.contextmanager
def _open_out(target: str) -> Iterator[BinaryIO]:
    if target == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        stream = Path(target).open("wb", buffering=1 << 20)  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from exc
    with stream:
        yield stream


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
