"""``carebus run``: the whole region on this machine, in one command.

::

    carebus run [--patients N] [--rate N] [--seed N] [--no-feed]
    carebus run --stop

Starts the local Kafka broker (unless a cluster is configured), applies the
topics, starts the MLLP listener, the stream worker and the dashboard (their
logs in ``.carebus/run/logs/``), sends a synthetic regional feed over MLLP with a
progress bar, and prints each alert as it is raised: rule, recipients, time and a
digest of its dedup key, never the patient. Ctrl-C (or SIGTERM, or SIGHUP when
the terminal closes) stops everything it started, even when its output can no
longer be written (``carebus run | tee run.log``: the same Ctrl-C ends ``tee``);
if ``carebus run`` itself is killed, its warden stops the rest. See
:mod:`carebus.run`.

``carebus run --stop`` stops the processes an earlier run in this directory left
running (a run still running there is asked to stop, as Ctrl-C would), then
removes its pids file. A run that finds such processes says so and starts nothing.

Exit status: 0 after Ctrl-C, SIGTERM or SIGHUP, 1 when a part failed or exited on
its own (the message says which and where its log is), 2 for a usage or settings
error (an earlier run still running included).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import random
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from carebus.settings import Settings

if TYPE_CHECKING:
    from carebus.replay import ReplaySummary

DEFAULT_PATIENTS = 200
DEFAULT_RATE = 50.0
_BAR_WIDTH = 24


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--patients",
        type=_positive_int,
        default=DEFAULT_PATIENTS,
        metavar="N",
        help=f"patients whose journeys the demo feed holds (default {DEFAULT_PATIENTS})",
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        default=DEFAULT_RATE,
        metavar="N",
        help=f"messages a second the feed is sent at (default {DEFAULT_RATE:g})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="the feed's random seed (default: a new one each run, printed)",
    )
    parser.add_argument(
        "--no-feed",
        action="store_true",
        help="send nothing: run the region for your own interface engine or `carebus replay`",
    )
    parser.add_argument(
        "--stop",
        action="store_true",
        help="stop what an earlier `carebus run` in this directory left running, then exit",
    )
    # The warden's (carebus.run): the lifeline's file descriptor and the run directory.
    parser.add_argument("--lifeline", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from carebus.errors import CarebusError, ConfigError
    from carebus.log import configure_logging
    from carebus.run import RUN_DIR, RunOptions, run_region, stop_run

    options = RunOptions(
        patients=args.patients,
        rate=args.rate,
        seed=new_seed() if args.seed is None else args.seed,
        feed=not args.no_feed,
        config=getattr(args, "config", None),
        run_dir=args.run_dir or RUN_DIR,
    )
    # Nothing written to the terminal (or to a pipe whose reader has gone) may stop
    # the stopping: every line, the log's included, goes through a SafeStream.
    out, err = SafeStream(sys.stdout), SafeStream(sys.stderr)
    configure_logging(settings.log, cast(TextIO, err))
    console = Console(out, err)
    try:
        if args.stop or args.lifeline is not None:
            return stop_run(settings, options, console, lifeline=args.lifeline)
        # The children get this process's environment (so the same settings) plus the
        # region config; this is the CLI edge, where the environment may be read.
        return run_region(
            settings, options, base_env=dict(os.environ), python=sys.executable, console=console
        )
    except CarebusError as exc:  # said here, through the SafeStream, not by carebus.cli
        print(f"carebus: {exc}", file=err, flush=True)
        return 2 if isinstance(exc, ConfigError) else 1


def new_seed() -> int:
    """A fresh feed seed, so that each run's patients (and alerts) are new."""
    return random.randrange(1, 1_000_000)


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from exc
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _positive_float(text: str) -> float:
    try:
        number = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not number > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return number


# -- alert lines -------------------------------------------------------------------


#: Sixteen consonants standing for the hex digits of a key digest.
_DIGEST_LETTERS = str.maketrans("0123456789abcdef", "bcdfghjkmnpqrstv")


def key_digest(dedup_key: str) -> str:
    """A short, stable reference to an alert that does not reveal its dedup key.

    The dedup key holds the patient key, so lines on a terminal show this instead:
    twelve hex digits of its SHA-256 written as consonants, so that a digest never
    holds a run of digits that reads (to a person or a data-loss scanner) as an NHS
    number.
    """
    return hashlib.sha256(dedup_key.encode("utf-8")).hexdigest()[:12].translate(_DIGEST_LETTERS)


# Ten digits, optionally spaced 3-3-4, not inside a longer run: NHS-number shaped.
_NHS_LIKE = re.compile(r"(?<!\d)\d{3}[ -]?\d{3}[ -]?\d{4}(?!\d)")


def alert_line(record: Mapping[str, Any]) -> str:
    """One short line for a ``carebus.alerts.Alert`` record, without patient data.

    ``alert RULE -> RECIPIENTS raised TIME key DIGEST: SUMMARY``. The patient is
    left out and the dedup key shown as :func:`key_digest`. The summary is meant to
    carry no identifiers; the patient key and NHS-number-shaped digits are masked
    in it all the same.
    """
    raised = record["raised_at"]
    if isinstance(raised, datetime):
        raised_text = raised.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")
    else:
        raised_text = str(raised)
    recipients = ",".join(str(r) for r in record.get("recipients") or ()) or "-"
    line = (
        f"alert {record['rule']} -> {recipients} raised {raised_text} "
        f"key {key_digest(str(record['dedup_key']))}"
    )
    summary = " ".join(str(record.get("summary") or "").split())
    if summary:
        patient = str(record.get("patient") or "")
        if len(patient) >= 3:
            summary = summary.replace(patient, "***")
        line += ": " + _NHS_LIKE.sub("***", summary)
    return line


def feed_bar(summary: ReplaySummary, total: int | None, width: int = _BAR_WIDTH) -> str:
    """The feed's progress: a bar when the total is known, then the counts and rate."""
    rate = summary.sent / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
    counts = f"{summary.line()}  {rate:.0f} msg/s"
    if not total:
        return f"feed {counts}"
    # Messages sent, not ``progress``: with several connections one may run ahead.
    fraction = min(summary.sent / total, 1.0)
    filled = round(fraction * width)
    return f"feed [{'#' * filled}{'-' * (width - filled)}] {fraction:4.0%} {counts}"


# -- the terminal ------------------------------------------------------------------


class SafeStream(io.TextIOBase):
    """A text stream that drops what it cannot write instead of raising.

    The first write or flush that fails (``BrokenPipeError`` when the reader of a
    pipe has gone, ``EIO`` from a closed terminal, a closed file) marks it broken;
    from then on everything is dropped, and the file descriptor under it is pointed
    at ``/dev/null`` so that other writers to it (the interpreter's flush at exit)
    cannot fail either.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self.stream.write(text)
            except (OSError, ValueError):
                self._break()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self._break()

    def isatty(self) -> bool:
        try:
            return not self.broken and self.stream.isatty()
        except (OSError, ValueError):
            return False

    def writable(self) -> bool:
        return True

    def _break(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError, ValueError):
            fd = self.stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)


class Console:
    """A :class:`carebus.run.Reporter` for a terminal.

    Lines and alerts go to ``out``; warnings and the feed's progress to ``err``.
    On a terminal the progress bar is redrawn in place, and lines printed meanwhile
    clear it first and have it drawn again below them; elsewhere progress is a
    line every few seconds. Both streams are written through :class:`SafeStream`:
    output that cannot be written is dropped, never raised.
    """

    def __init__(self, out: TextIO | SafeStream, err: TextIO | SafeStream) -> None:
        # Wrapped so that no output failure ever reaches the caller.
        self.out = out if isinstance(out, SafeStream) else SafeStream(out)
        self.err = err if isinstance(err, SafeStream) else SafeStream(err)
        self.tty = self.err.isatty()
        self.interval_s = 0.2 if self.tty else 5.0
        self.total: int | None = None
        self._bar = ""

    def say(self, text: str) -> None:
        """Print a line."""
        self._clear()
        print(text, file=self.out, flush=True)
        self._draw()

    def warn(self, text: str) -> None:
        """Print a warning."""
        self._clear()
        print(f"carebus run: {text}", file=self.err, flush=True)
        self._draw()

    def alert(self, record: Mapping[str, Any]) -> None:
        """Print an alert's line (:func:`alert_line`)."""
        self.say(alert_line(record))

    def feed_total(self, total: int | None) -> None:
        """Remember how many messages the feed has, for the bar."""
        self.total = total

    def progress(self, summary: ReplaySummary) -> None:
        """Show how far the feed is."""
        bar = feed_bar(summary, self.total)
        if self.tty:
            self._bar = bar
            self._draw()
        else:
            print(bar, file=self.err, flush=True)

    def feed_done(self, summary: ReplaySummary) -> None:
        """End the bar and print the feed's summary."""
        if self.tty:
            self._bar = feed_bar(summary, self.total)
            self._draw()
            self.err.write("\n")
            self.err.flush()
            self._bar = ""
        p99 = summary.latency.percentile(99)
        latency = "-" if p99 is None else f"{p99 * 1000:.0f} ms"
        self.say(f"feed sent: {summary.line()}; p99 ACK latency {latency}")
        if summary.aborted:
            self.warn(f"the feed stopped early: {summary.aborted}")

    def _clear(self) -> None:
        if self.tty and self._bar:
            self.err.write("\r\x1b[K")
            self.err.flush()

    def _draw(self) -> None:
        if self.tty and self._bar:
            self.err.write(f"\r{self._bar}\x1b[K")
            self.err.flush()
