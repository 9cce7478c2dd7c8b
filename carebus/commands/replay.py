"""``carebus replay FEED...``: send HL7 v2 feeds over MLLP to a listener.

::

    carebus replay FEED [FEED ...] [--host H] [--port P] [--rate N | --max]
                   [--connections N] [--timeout S] [--retries N]
                   [--tls] [--tls-cafile F] [--tls-certfile F] [--tls-keyfile F]

Each message waits for its ACK before the next goes on its connection (see
:mod:`carebus.replay`). Standard error shows a progress bar when it is a
terminal, else a line every few seconds; standard output gets the summary (sent,
AA, AE, AR, no ACK, p50/p99 ACK latency). Exit status 0 when every message got
an ACK (AE and AR included), 1 when one did not or the listener could not be
reached, 2 for a usage error or an unreadable feed.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from carebus.errors import ConfigError
from carebus.settings import Settings

if TYPE_CHECKING:
    from carebus.replay import Outgoing, ReplaySummary

#: Default messages a second: a busy regional engine, gentle on a laptop.
DEFAULT_RATE = 100.0
_BAR_WIDTH = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "feeds", metavar="FEED", nargs="+", help="HL7 v2 feed file: MLLP-framed, plain or batch"
    )
    parser.add_argument("--host", default=None, help="listener host (default: mllp.host)")
    parser.add_argument("--port", type=int, default=None, help="listener port (default: mllp.port)")
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        metavar="N",
        help=f"messages a second over all connections (default {DEFAULT_RATE:g})",
    )
    speed.add_argument(
        "--max", action="store_true", help="no rate limit: send as fast as the ACKs come back"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=1,
        metavar="N",
        help="connections to use; messages are spread by sending facility (default 1)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds to wait for an ACK"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help="resend a message that got AE or no ACK up to N times (default 0)",
    )
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--tls-cafile", type=Path, help="CA bundle to verify the listener")
    parser.add_argument("--tls-certfile", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--tls-keyfile", type=Path, help="client certificate's private key")
    parser.add_argument("--tls-server-name", help="name to verify in the listener's certificate")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from carebus.replay import ReplayOptions, replay

    if args.connections < 1:
        raise ConfigError("--connections must be at least 1")
    if args.retries < 0:
        raise ConfigError("--retries must not be negative")
    if not args.max and args.rate <= 0:
        raise ConfigError("--rate must be positive (or use --max)")
    if args.timeout <= 0:
        raise ConfigError("--timeout must be positive")
    sizes = _feed_sizes(args.feeds)
    options = ReplayOptions(
        host=args.host or settings.mllp.host,
        port=args.port or settings.mllp.port,
        rate=None if args.max else args.rate,
        connections=args.connections,
        ack_timeout_s=args.timeout,
        retries=args.retries,
        ssl=client_ssl_context(args),
        server_hostname=args.tls_server_name,
    )
    progress = Progress(sys.stderr, total=sum(sizes))
    summary = asyncio.run(
        replay(
            _outgoing(args.feeds),
            options,
            on_progress=progress.update,
            progress_interval_s=progress.interval_s,
        )
    )
    progress.finish(summary)
    print(summary.report(), flush=True)
    if summary.aborted:
        print(f"carebus replay: {summary.aborted}", file=sys.stderr)
    return 0 if summary.ok else 1


def client_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """TLS (1.2 or later, verified) when ``--tls`` or a TLS file is given."""
    if not (args.tls or args.tls_cafile or args.tls_certfile):
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(args.tls_cafile) if args.tls_cafile else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if args.tls_certfile:
            keyfile = str(args.tls_keyfile) if args.tls_keyfile else None
            ctx.load_cert_chain(str(args.tls_certfile), keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate or CA: {exc}") from exc
    return ctx


def _feed_sizes(names: Sequence[str]) -> list[int]:
    sizes = []
    for name in names:
        try:
            sizes.append(Path(name).stat().st_size)
        except OSError as exc:
            raise ConfigError(f"cannot read {name}: {exc.strerror or exc}") from exc
    return sizes


def _outgoing(names: Sequence[str]) -> Iterator[Outgoing]:
    """Every message of every feed, in order, read one feed at a time."""
    from carebus.replay import Outgoing
    from connectors.hl7 import iter_feed

    base = 0
    for name in names:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {name}: {exc.strerror or exc}") from exc
        for item in iter_feed(data):
            yield Outgoing(item.raw, base + item.offset + len(item.raw))
        base += len(data)


class Progress:
    """Progress on a stream: a redrawn bar on a terminal, else a line every few seconds."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = max(total, 1)
        self.tty = stream.isatty()
        self.interval_s = 0.2 if self.tty else 5.0
        self._drawn = False

    def update(self, summary: ReplaySummary) -> None:
        """Show how far the run is."""
        fraction = min(summary.progress / self.total, 1.0)
        rate = summary.sent / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
        if self.tty:
            filled = round(fraction * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            text = f"\r[{bar}] {fraction:4.0%}  {summary.line()}  {rate:.0f} msg/s"
            self.stream.write(text + "\x1b[K")
            self._drawn = True
        else:
            self.stream.write(f"replay: {fraction:.0%} {summary.line()} ({rate:.0f} msg/s)\n")
        self.stream.flush()

    def finish(self, summary: ReplaySummary) -> None:
        """Draw the final state and end the bar's line."""
        if self.tty:
            if summary.aborted is None:
                summary.progress = self.total
            self.update(summary)
            self.stream.write("\n")
            self.stream.flush()
