"""``carebus listen``: the MLLP listener, plus the HTTP and file-drop connectors if enabled.

Serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``metrics.host`` and
``metrics.listener_port`` from the start. Provider labels come from the region
config (``worker.region_config``) when that file exists; every sender is ``other``
otherwise. ``/readyz`` is 200 once Kafka is reachable, the raw, events and
dead-letter topics exist, and the MLLP socket is listening; with the file drop on,
also while its task runs and its folders are writable (``filedrop``).

While Kafka cannot be reached or a topic is missing at start, the MLLP port stays
closed (senders queue and retry), ``/readyz`` says why, and the start is retried
with a growing pause of up to 15 s.

Once Kafka is ready, and before the MLLP port opens, the topics' durability is
checked (:mod:`carebus.durability`): outside the local development broker, topics
with replication factor < 3 or ``min.insync.replicas`` < 2 stop the listener with a
one-line error unless ``topics.allow_low_durability`` is set; ``/readyz`` has a
``durability`` check that says which.

The MLLP port, the HTTP port (when enabled) and the metrics port each refuse to
start when bound off the loopback interface without their protection (TLS, and
client certificates or a sender allow-list), unless that component's
``allow_insecure`` is set; ``/readyz`` then names them (:mod:`carebus.exposure`).

Runs until SIGINT or SIGTERM, then stops taking messages, lets the ones in
progress finish (their ACKs are sent), flushes the producer and exits 0.

The event loop is uvloop when it is installed (``mllp.event_loop``, default
``auto``); ``python -m benchmarks mllp`` compares it with asyncio's own loop.

With ``mllp.processes`` over 1 (0: one per CPU) this process becomes a parent: it
starts that many child processes (each a listener with its own producer and
duplicate window, the HTTP and file-drop connectors in child 0 only), waits until
each is ready (its duplicate window rebuilt from the raw topic by
:mod:`connectors.window`), then binds the MLLP port and hands every connection to
the child of its peer's address (:mod:`connectors.mllp.handoff`), refusing an
address's connections over ``mllp.max_connections_per_ip`` across all children.
The parent serves ``/healthz``
and ``/readyz`` (every child alive and ready, the port bound) and its own process
metrics on ``metrics.listener_port``; child ``i`` serves its ``/metrics``,
``/healthz`` and ``/readyz`` on ``metrics.listener_port + 1 + i``. On SIGINT or
SIGTERM the parent closes the port and the children's channels; each child then
finishes its messages in progress and exits; any child still running after the
grace period is killed. If the parent dies, its children stop by themselves. If a
child exits, the parent stops the others and exits too (its supervisor restarts it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from carebus.gctuning import tune_gc
from carebus.settings import MllpSettings, Settings

if TYPE_CHECKING:
    from carebus.health import Check, HealthServer
    from carebus.metrics import Metrics
    from connectors.ingest import Ingest

T = TypeVar("T")

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
    run_loop(
        serve(settings, http=args.http, filedrop=args.file_drop, grace_s=args.grace),
        settings.mllp,
    )
    return 0


def loop_factory(settings: MllpSettings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory ``mllp.event_loop`` asks for; None is asyncio's default.

    ``auto`` takes uvloop when it is installed; ``uvloop`` insists on it.
    """
    from carebus.errors import ConfigError

    choice = settings.event_loop
    if choice == "asyncio":
        return None
    if importlib.util.find_spec("uvloop") is None:
        if choice == "uvloop":
            raise ConfigError("mllp.event_loop is uvloop, but uvloop is not installed")
        return None
    import uvloop

    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run_loop(main: Coroutine[Any, Any, T], settings: MllpSettings) -> T:
    """Run ``main`` to completion on the event loop ``settings.event_loop`` chooses."""
    try:
        factory = loop_factory(settings)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


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
        providers=providers,
        topics=TopicNames.from_settings(settings.topics),
        process_metrics=True,
        role="listener",
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


def exposure_check(settings: Settings, http: bool | None) -> Check:
    """Refuse an unprotected non-loopback bind (``ConfigError``); else the ``/readyz`` check."""
    from carebus.exposure import check_components, readiness_check

    components = ["mllp", "metrics"]
    if settings.http.enabled if http is None else http:
        components.append("http")
    return readiness_check(check_components(settings, components))


def listening_check(ingest: Ingest) -> Check:
    """Ready while the MLLP socket accepts connections."""
    from carebus.health import CheckResult

    async def check() -> CheckResult:
        if ingest.listening:
            return CheckResult(True, f"listening on port {ingest.mllp.port}")
        return CheckResult(False, "not listening")

    return check


def filedrop_check(ingest: Ingest) -> Check:
    """Ready while the file-drop task runs and its folders are writable."""
    from carebus.health import CheckResult

    async def check() -> CheckResult:
        if ingest.filedrop is None:
            return CheckResult(True, "file drop off")
        ok, detail = ingest.filedrop.readiness()
        return CheckResult(ok, detail)

    return check


def process_count(settings: MllpSettings) -> int:
    """How many listener processes ``mllp.processes`` asks for (0: one per CPU)."""
    from carebus.errors import ConfigError

    if settings.processes < 0:
        raise ConfigError(
            f"mllp.processes must be 0 (one per CPU) or more, not {settings.processes}"
        )
    return settings.processes or (os.cpu_count() or 1)


async def serve(
    settings: Settings,
    *,
    http: bool | None = None,
    filedrop: bool | None = None,
    grace_s: float = 10.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the ingest connectors and the health endpoint until ``stop``, SIGINT or SIGTERM.

    With ``mllp.processes`` over 1, run them in child processes (module docstring).
    """
    stop = stop or asyncio.Event()
    exposure_check(settings, http)  # refuse before anything starts
    with _stop_on_signals(stop):
        if process_count(settings.mllp) > 1:
            await _serve_parent(settings, http=http, filedrop=filedrop, grace_s=grace_s, stop=stop)
        else:
            await _serve_one(settings, http=http, filedrop=filedrop, grace_s=grace_s, stop=stop)


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def _serve_one(
    settings: Settings,
    *,
    http: bool | None,
    filedrop: bool | None,
    grace_s: float,
    stop: asyncio.Event,
    child: tuple[int, socket.socket] | None = None,
) -> None:
    """One listener process; as ``child`` (index, channel), serving handed-over sockets."""
    from carebus.compiled import hot_path
    from carebus.durability import DurabilityGate
    from carebus.health import HealthServer, kafka_check, metrics_ssl_context
    from carebus.log import get_logger
    from carebus.topics import TopicNames
    from connectors.ingest import Ingest
    from connectors.mllp.handoff import Receiver

    # "compiled" unless the package was built with CAREBUS_COMPILE=0 (carebus.compiled).
    get_logger(__name__).info("listener hot path", hot_path=hot_path())
    metrics = build_metrics(settings)
    ingest = Ingest(
        settings,
        http=http,
        filedrop=filedrop,
        observer=metrics,
        child=child[0] if child is not None else None,
    )
    names = TopicNames.from_settings(settings.topics)
    kafka = kafka_check(settings, [names.raw, names.events, names.deadletter])
    port = settings.metrics.listener_port
    receiver = None
    started = False
    mllp_check = listening_check(ingest)
    if child is not None:
        index, channel = child
        port += 1 + index
        ingest.mllp.accept_handed_over()
        receiver = Receiver(channel, ingest.mllp.adopt, stop.set)
        receiver.start()
        mllp_check = _flag_check(lambda: started, "serving handed-over connections")
    gate = DurabilityGate(settings, [names.raw, names.events, names.deadletter], "listener")
    checks = {
        "kafka": kafka,
        "mllp": mllp_check,
        "durability": gate.check,
        "exposure": exposure_check(settings, http),
    }
    if ingest.filedrop is not None:
        checks["filedrop"] = filedrop_check(ingest)
    health = HealthServer(
        metrics,
        checks,
        host=settings.metrics.host,
        port=port,
        ssl_context=metrics_ssl_context(settings),
    )
    try:
        await _start_health(health, settings.metrics.host, port)
        if await start_when_kafka_ready(ingest, stop, kafka, before_start=gate.require):
            started = True
            if receiver is not None:
                receiver.ready()
            tune_gc()
            await stop.wait()
    finally:
        if receiver is not None:
            receiver.stop()
        await ingest.stop(grace_s)
        await health.stop()
        close = getattr(kafka, "close", None)
        if close is not None:
            await close()


async def _start_health(health: HealthServer, host: str, port: int) -> None:
    from carebus.errors import ConfigError

    try:
        await health.start()
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc


def _flag_check(flag: Callable[[], bool], detail: str) -> Check:
    from carebus.health import CheckResult

    async def check() -> CheckResult:
        return CheckResult(True, detail) if flag() else CheckResult(False, "not " + detail)

    return check


# -- several listener processes ----------------------------------------------------------


@dataclass(frozen=True)
class ChildArgs:
    """What a listener child is started with (pickled into the spawned process)."""

    settings: Settings
    index: int
    http: bool | None
    filedrop: bool | None
    grace_s: float


def child_main(args: ChildArgs, channel: socket.socket) -> None:
    """Entry point of a listener child (a spawned process)."""
    from carebus.errors import CarebusError, ConfigError
    from carebus.log import configure_logging, get_logger

    configure_logging(args.settings.log)
    stop = asyncio.Event()

    async def main() -> None:
        with _stop_on_signals(stop):
            await _serve_one(
                args.settings,
                http=args.http,
                filedrop=args.filedrop,
                grace_s=args.grace_s,
                stop=stop,
                child=(args.index, channel),
            )

    try:
        run_loop(main(), args.settings.mllp)
    except CarebusError as exc:
        get_logger(__name__).error(
            "listener process failed", process=args.index, error=type(exc).__name__, detail=str(exc)
        )
        raise SystemExit(2 if isinstance(exc, ConfigError) else 1) from None


async def _serve_parent(
    settings: Settings,
    *,
    http: bool | None,
    filedrop: bool | None,
    grace_s: float,
    stop: asyncio.Event,
) -> None:
    """Start the children, hand them connections, stop them all (module docstring)."""
    from carebus.errors import CarebusError
    from carebus.health import HealthServer, metrics_ssl_context
    from carebus.log import get_logger
    from connectors.mllp.handoff import Dispatcher, channel_pair

    log = get_logger(__name__)
    count = process_count(settings.mllp)
    ctx = multiprocessing.get_context("spawn")
    pairs = [channel_pair() for _ in range(count)]
    children = [
        ctx.Process(
            target=child_main,
            args=(
                ChildArgs(
                    settings,
                    i,
                    http if i == 0 else False,
                    filedrop if i == 0 else False,
                    grace_s,
                ),
                child_end,
            ),
            name=f"carebus-listen-{i}",
        )
        for i, (_, child_end) in enumerate(pairs)
    ]
    channels = [parent_end for parent_end, _ in pairs]
    # The parent's own: process metrics and the connections it refuses, no messages.
    parent_metrics = build_metrics(settings)
    dispatcher = Dispatcher(settings.mllp, channels, parent_metrics)
    ready = [False] * count
    checks = {
        "children": _flag_check(
            lambda: all(ready) and all(c.is_alive() for c in children),
            f"{count} listener processes ready",
        ),
        "mllp": _flag_check(lambda: dispatcher.listening, "listening"),
        "exposure": exposure_check(settings, http),
    }
    health = HealthServer(
        parent_metrics,
        checks,
        host=settings.metrics.host,
        port=settings.metrics.listener_port,
        ssl_context=metrics_ssl_context(settings),
    )
    try:
        await _start_health(health, settings.metrics.host, settings.metrics.listener_port)
        for child in children:
            child.start()
        for _, child_end in pairs:
            child_end.close()
        log.info("listener processes started", processes=count)
        exited = asyncio.ensure_future(_first_exit(children))
        if await _all_ready(channels, ready, stop, exited):
            await dispatcher.start()
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait((stopping, exited), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
        exited.cancel()
        if not stop.is_set():  # a child exited, or closed its channel, first
            await asyncio.sleep(0.5)  # let it finish exiting, for its exit code
            codes = {c.name: c.exitcode for c in children if not c.is_alive()}
            log.error("a listener process exited; stopping the others", exit_codes=codes)
            raise CarebusError(f"listener process exited: {codes}")
    finally:
        await dispatcher.stop()
        for channel in channels:
            channel.close()  # each child sees end-of-file and stops gracefully
        await asyncio.to_thread(_reap, children, grace_s + 15.0)
        await health.stop()
        log.info("listener processes stopped")


async def _first_exit(children: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """Return once any child process has exited."""
    while all(child.is_alive() for child in children):
        await asyncio.sleep(0.2)


async def _all_ready(
    channels: list[socket.socket],
    ready: list[bool],
    stop: asyncio.Event,
    exited: asyncio.Future[None],
) -> bool:
    """Wait for every child's READY; False when stopped, or a child exited first."""
    from connectors.mllp.handoff import READY

    loop = asyncio.get_running_loop()
    for channel in channels:
        channel.setblocking(False)

    async def one(i: int) -> None:
        data = await loop.sock_recv(channels[i], 16)
        if data != READY:
            raise ConnectionError(f"listener process {i} closed its channel")
        ready[i] = True

    waiting = asyncio.ensure_future(asyncio.gather(*(one(i) for i in range(len(channels)))))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait((waiting, stopping, exited), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not waiting.done():
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await waiting
        return False
    try:
        waiting.result()
    except ConnectionError:
        return False
    return True


def _reap(children: Sequence[multiprocessing.process.BaseProcess], timeout_s: float) -> None:
    """Wait for the children to exit; kill any still running after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    for child in children:
        if child.pid is None:  # never started
            continue
        child.join(max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.pid is not None and child.is_alive():
            child.kill()
            child.join(5.0)


async def start_when_kafka_ready(
    ingest: Ingest,
    stop: asyncio.Event,
    kafka: Check,
    *,
    before_start: Callable[[], Awaitable[None]] | None = None,
) -> bool:
    """Start ``ingest`` once ``kafka`` (the readiness check) passes; retry while it fails.

    ``before_start`` (the durability check) runs once Kafka is ready, before the MLLP
    port opens. True once started; False when ``stop`` was set first. A start that
    still finds Kafka unavailable is retried too; other failures (a port in use, a
    bad TLS file, topics that are not durable) are raised.
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
                if before_start is not None:
                    await before_start()
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
