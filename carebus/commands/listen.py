"""``carebus listen``: the MLLP listener, plus the HTTP and file-drop connectors if enabled.

Runs until SIGINT or SIGTERM, then stops taking messages, lets the ones in
progress finish (their ACKs are sent), flushes the producer and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal

from carebus.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run the HTTP endpoint (default: http.enabled)",
    )
    parser.add_argument(
        "--file-drop",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also watch the file-drop folder (default: filedrop.enabled)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds to let messages in progress finish on shutdown (default 10)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(serve(settings, http=args.http, filedrop=args.file_drop, grace_s=args.grace))
    return 0


async def serve(
    settings: Settings,
    *,
    http: bool | None = None,
    filedrop: bool | None = None,
    grace_s: float = 10.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the ingest connectors until ``stop`` is set, SIGINT or SIGTERM."""
    from connectors.ingest import Ingest

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    ingest = Ingest(settings, http=http, filedrop=filedrop)
    try:
        await ingest.start()
        tune_gc()
        await stop.wait()
    finally:
        await ingest.stop(grace_s)
        for sig in handled:
            loop.remove_signal_handler(sig)


def tune_gc() -> None:
    """Make the cyclic garbage collector cheaper for a long-running ingest process.

    Everything loaded at start-up (modules, schemas) is frozen out of collection,
    and young collections run less often: each message allocates hundreds of
    short-lived objects that reference counting frees anyway.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
