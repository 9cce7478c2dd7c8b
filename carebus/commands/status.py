"""``carebus status``: stream health in a terminal table, or JSON with ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from carebus.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        default="7d",
        help="how far back to read records for feeds, dead letters and alerts (default 7d)",
    )
    parser.add_argument(
        "--region",
        type=Path,
        default=None,
        help="region config with providers' expected_interval (default: worker.region_config)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="give up reading after this many seconds"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from carebus.errors import ConfigError
    from carebus.feedwatch import load_feed_expectations, parse_interval
    from carebus.status import DEFAULT_FEED_IDLE, collect_status, format_table

    try:
        window = parse_interval(args.since)
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from exc
    region = args.region or settings.worker.region_config
    expectations = load_feed_expectations(region) if region.exists() or args.region else {}
    feed_idle = DEFAULT_FEED_IDLE
    if region.exists():
        from streams.region import load_region

        feed_idle = timedelta(minutes=load_region(region).feed_idle_minutes)
    now = datetime.fromtimestamp(time.time(), UTC)
    report = collect_status(
        settings,
        now=now,
        since=now - window,
        expectations=expectations,
        timeout_s=args.timeout,
        feed_idle=feed_idle,
    )
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_table(report))
    return 0
