"""``carebus worker``: run the Faust stream worker that raises coordination alerts.

Loads and validates the region config, creates missing topics (and checks that
the events, alerts, status and control topics are co-partitioned), checks their
durability (:mod:`carebus.durability`: outside the local development broker, a
one-line refusal on replication factor < 3 or ``min.insync.replicas`` < 2 unless
``topics.allow_low_durability``; ``/readyz`` reports it), then runs the
worker of :mod:`streams.app` until SIGTERM or SIGINT, with ``/metrics``,
``/healthz`` and ``/readyz`` on ``metrics.worker_port``. A web port or metrics
port bound off the loopback interface without TLS refuses to start unless allowed
(:mod:`carebus.exposure`). The event loop is uvloop
when it is installed (``worker.event_loop``): Faust's per-record cost is mostly
event-loop work (tasks and futures), which uvloop makes cheaper.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
from typing import TYPE_CHECKING, Any

from carebus.errors import ConfigError
from carebus.settings import Settings, WorkerSettings

if TYPE_CHECKING:
    from carebus.topics import TopicNames


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-topics",
        action="store_true",
        help="do not create missing topics at start (they must exist)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    import faust
    import mode

    from carebus.durability import DurabilityGate, require_durable
    from carebus.exposure import check_components, readiness_check
    from carebus.gctuning import tune_gc
    from carebus.health import HealthServer, assignment_check, kafka_check, metrics_ssl_context
    from carebus.log import get_logger
    from carebus.metrics import Metrics
    from carebus.topics import TopicNames
    from streams.app import build_worker, prepare_topics
    from streams.region import load_region

    log = get_logger(__name__)
    surfaces = check_components(settings, ["worker.web", "metrics"])
    if settings.worker.web_token_file is None:
        log.warning("worker.web_token_file is not set: the alert lookup answers 401 to everyone")
    use_event_loop(settings.worker)
    region = load_region(settings.worker.region_config)
    try:
        settings.worker.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create worker.data_dir {settings.worker.data_dir}") from exc
    if not args.no_topics:
        prepare_topics(settings, region.providers)
    names = TopicNames.from_settings(settings.topics)
    durability = DurabilityGate(settings, worker_topics(names), "worker")
    durability.record(require_durable(settings, worker_topics(names), role="worker"))
    metrics = Metrics(providers=region.providers, topics=names, process_metrics=True, role="worker")
    worker = build_worker(settings, region=region, sensors=metrics)
    server = HealthServer(
        metrics,
        {
            "kafka": kafka_check(settings, [names.events, names.alerts]),
            "partitions": assignment_check(lambda: len(worker.delivery.assigned())),
            "durability": durability.check,
            "exposure": readiness_check(surfaces),
        },
        host=settings.metrics.host,
        port=settings.metrics.worker_port,
        ssl_context=metrics_ssl_context(settings),
    )

    @worker.app.service
    class Health(mode.Service):
        """The health and metrics endpoint, for as long as the app runs."""

        async def on_start(self) -> None:
            await server.start()

        async def on_stop(self) -> None:
            await server.stop()

    log.info(
        "worker starting",
        event_loop=type(asyncio.get_event_loop_policy()).__module__.split(".")[0],
        app_id=settings.worker.app_id,
        store=settings.worker.store,
        partitions=settings.topics.partitions,
    )
    tune_gc()
    runner: Any = faust.Worker(
        worker.app,
        quiet=True,
        loglevel=settings.log.level,
        override_logging=False,
        redirect_stdouts=False,
    )
    try:
        runner.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def worker_topics(names: TopicNames) -> list[str]:
    """The topics whose durability the worker checks at start (carebus.durability)."""
    return [names.events, names.alerts, names.alert_status, names.ops, names.engine_errors]


def use_event_loop(settings: WorkerSettings) -> None:
    """Install the event loop policy ``worker.event_loop`` asks for, before any loop exists.

    ``auto`` takes uvloop when it is installed; ``uvloop`` insists on it.
    """
    choice = settings.event_loop
    if choice == "asyncio":
        return
    if importlib.util.find_spec("uvloop") is None:
        if choice == "uvloop":
            raise ConfigError("worker.event_loop is uvloop, but uvloop is not installed")
        return
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
