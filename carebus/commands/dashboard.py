"""``carebus dashboard``: serve the live stream-health page (and watch for silent feeds)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from carebus.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="address to bind (default metrics.host)")
    parser.add_argument(
        "--port", type=int, default=None, help="port to bind (default metrics.dashboard_port)"
    )
    parser.add_argument(
        "--since", default="24h", help="count records from this long ago (default 24h)"
    )
    parser.add_argument(
        "--region",
        type=Path,
        default=None,
        help="region config with providers' expected_interval (default: worker.region_config)",
    )
    parser.add_argument(
        "--feedwatch-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how often the silent-feed watch checks the feeds (default 10)",
    )
    parser.add_argument(
        "--no-feedwatch",
        action="store_true",
        help="do not publish silent-feed alerts on the ops topic from this process",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(serve(args, settings))
    return 0


async def serve(args: argparse.Namespace, settings: Settings) -> None:
    from aiohttp import web

    from carebus.dashboard import Collector, build_app
    from carebus.errors import ConfigError
    from carebus.exposure import check_components, readiness_check
    from carebus.feedwatch import load_feed_expectations, parse_interval, run_feedwatch
    from carebus.health import metrics_ssl_context
    from carebus.log import get_logger
    from carebus.metrics import Metrics
    from carebus.topics import TopicNames

    log = get_logger(__name__)
    host = args.host or settings.metrics.host
    surfaces = check_components(settings, ["dashboard"], hosts={"dashboard": host})
    tls = metrics_ssl_context(settings)
    try:
        window = parse_interval(args.since)
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from exc
    region = args.region or settings.worker.region_config
    expectations = load_feed_expectations(region) if region.exists() or args.region else {}
    now = datetime.fromtimestamp(time.time(), UTC)
    metrics = Metrics(
        providers=expectations,
        topics=TopicNames.from_settings(settings.topics),
        role="dashboard",
    )
    collector = Collector(settings, since=now - window, expectations=expectations)
    app = build_app(collector, metrics=metrics, checks={"exposure": readiness_check(surfaces)})
    runner = web.AppRunner(app, access_log=None)
    port = settings.metrics.dashboard_port if args.port is None else args.port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[Any]] = []
    collector.start()
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port, ssl_context=tls).start()
        log.info("dashboard.started", host=host, port=port, tls=tls is not None)
        watched = {p: i for p, i in expectations.items() if i is not None}
        if watched and not args.no_feedwatch:
            tasks.append(
                asyncio.create_task(
                    run_feedwatch(
                        settings,
                        watched,
                        stop=stop,
                        metrics=metrics,
                        check_interval_s=args.feedwatch_every,
                    )
                )
            )
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter:
                task.result()  # a feed watch that failed stops the process with its error
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        await asyncio.to_thread(collector.stop)
