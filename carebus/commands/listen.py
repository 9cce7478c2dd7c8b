"""``carebus listen``: the MLLP listener, plus the HTTP and file-drop connectors if enabled.

Serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``metrics.host`` and
``metrics.listener_port`` from the start. Provider labels come from the region
config (``worker.region_config``) when that file exists; every sender is ``other``
otherwise. ``/readyz`` is 200 once Kafka is reachable, the raw, events and
dead-letter topics exist, and the MLLP socket is listening.

While Kafka cannot be reached or a topic is missing at start, the MLLP port stays
closed (senders queue and retry), ``/readyz`` says why, and the start is retried
with a growing pause of up to 15 s.

Runs until SIGINT or SIGTERM, then stops taking messages, lets the ones in
progress finish (their ACKs are sent), flushes the producer and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from carebus.settings import Settings

if TYPE_CHECKING:
    from carebus.health import Check
    from carebus.metrics import Metrics
    from connectors.ingest import Ingest

#: Pauses between start attempts while Kafka or a topic is missing, in seconds.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 15.0


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


def build_metrics(settings: Settings) -> Metrics:
    """The listener's metrics; provider labels from the region config if it exists."""
    from carebus.log import get_logger
    from carebus.metrics import Metrics
    from carebus.topics import TopicNames

    providers = region_providers(settings.worker.region_config)
    get_logger(__name__).info(
        "listener metrics",
        region_config=str(settings.worker.region_config),
        providers=len(providers),
    )
    return Metrics(
        providers=providers, topics=TopicNames.from_settings(settings.topics), process_metrics=True
    )


def region_providers(path: Path) -> list[str]:
    """The provider codes of the region config at ``path``; none when there is no file.

    The file is validated as the worker validates it (:func:`streams.region.load_region`):
    a broken one is a :class:`~carebus.errors.ConfigError`.
    """
    if not path.is_file():
        return []
    from streams.region import load_region

    return sorted(load_region(path).providers)


def listening_check(ingest: Ingest) -> Check:
    """Ready while the MLLP socket accepts connections."""
    from carebus.health import CheckResult

    async def check() -> CheckResult:
        if ingest.listening:
            return CheckResult(True, f"listening on port {ingest.mllp.port}")
        return CheckResult(False, "not listening")

    return check


async def serve(
    settings: Settings,
    *,
    http: bool | None = None,
    filedrop: bool | None = None,
    grace_s: float = 10.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the ingest connectors and the health endpoint until ``stop``, SIGINT or SIGTERM."""
    from carebus.errors import ConfigError
    from carebus.health import HealthServer, kafka_check
    from carebus.topics import TopicNames
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
    metrics = build_metrics(settings)
    ingest = Ingest(settings, http=http, filedrop=filedrop, observer=metrics)
    names = TopicNames.from_settings(settings.topics)
    kafka = kafka_check(settings, [names.raw, names.events, names.deadletter])
    health = HealthServer(
        metrics,
        {"kafka": kafka, "mllp": listening_check(ingest)},
        host=settings.metrics.host,
        port=settings.metrics.listener_port,
    )
    try:
        try:
            await health.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {settings.metrics.host}:"
                f"{settings.metrics.listener_port}: {exc.strerror}"
            ) from exc
        if await start_when_kafka_ready(ingest, stop, kafka):
            tune_gc()
            await stop.wait()
    finally:
        await ingest.stop(grace_s)
        await health.stop()
        close = getattr(kafka, "close", None)
        if close is not None:
            await close()
        for sig in handled:
            loop.remove_signal_handler(sig)


async def start_when_kafka_ready(ingest: Ingest, stop: asyncio.Event, kafka: Check) -> bool:
    """Start ``ingest`` once ``kafka`` (the readiness check) passes; retry while it fails.

    True once started; False when ``stop`` was set first. A start that still finds
    Kafka unavailable is retried too; other failures (a port in use, a bad TLS
    file) are raised.
    """
    from carebus.errors import KafkaUnavailable
    from carebus.health import CheckResult, run_checks
    from carebus.log import get_logger

    log = get_logger(__name__)
    pause = RETRY_FIRST_S
    while not stop.is_set():
        result = (await run_checks({"kafka": kafka}))["kafka"]
        if result.ok:
            try:
                return await _start_unless_stopped(ingest, stop)
            except KafkaUnavailable as exc:
                result = CheckResult(False, str(exc))
        log.warning("kafka not ready; mllp stays closed", detail=result.detail, retry_in_s=pause)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
        pause = min(pause * 2, RETRY_MAX_S)
    return False


async def _start_unless_stopped(ingest: Ingest, stop: asyncio.Event) -> bool:
    """``ingest.start()``, abandoned (False) if ``stop`` is set meanwhile."""
    starting = asyncio.ensure_future(ingest.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if starting.done():
        starting.result()
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await starting
    return False


def tune_gc() -> None:
    """Make the cyclic garbage collector cheaper for a long-running ingest process.

    Everything loaded at start-up (modules, schemas) is frozen out of collection,
    and young collections run less often: each message allocates hundreds of
    short-lived objects that reference counting frees anyway.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
