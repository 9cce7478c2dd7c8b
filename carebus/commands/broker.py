"""``carebus broker start|stop|status``: the project's own local Kafka broker.

When the settings name an existing cluster (``CAREBUS_KAFKA_BOOTSTRAP_SERVERS``),
start and stop do nothing and say so; status reports whether the cluster answers.
Exit status: 0 on success (status: up), 1 on failure, 3 when status finds it down.
"""

from __future__ import annotations

import argparse

from carebus.errors import KafkaUnavailable
from carebus.settings import Settings

EXIT_DOWN = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument(
        "--reset",
        action="store_true",
        help="with start: wipe the broker's data directory first (all topics are lost)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.uses_local_broker:
        return _external(args.action, settings)
    from carebus import broker

    b = settings.broker
    if args.action == "start":
        result = broker.start(b, reset=args.reset)
        if result.started:
            print(
                f"broker started: pid {result.pid} at {result.address} "
                f"in {result.seconds:.1f}s (home {broker.BrokerPaths.of(b).home})"
            )
        else:
            print(f"broker already running: pid {result.pid} at {result.address}")
        return 0
    if args.action == "stop":
        pid = broker.stop(b)
        if pid is None:
            print(f"broker not running at {broker.address(b)}")
        else:
            print(f"broker stopped (pid {pid})")
        return 0
    state = broker.status(b)
    note = f" ({state.note})" if state.note else ""
    if state.running:
        print(f"broker up: pid {state.pid} at {state.address}{note}")
        return 0
    print(f"broker down at {state.address}{note}")
    return EXIT_DOWN


def _external(action: str, settings: Settings) -> int:
    servers = settings.kafka.bootstrap_servers
    if action != "status":
        print(f"using the existing Kafka cluster at {servers}; no local broker to {action}")
        return 0
    from carebus.admin import describe_cluster

    try:
        info = describe_cluster(settings)
    except KafkaUnavailable as exc:
        print(f"cluster unreachable at {servers}: {exc}")
        return EXIT_DOWN
    print(f"cluster up at {servers}: {len(info.brokers)} broker(s), id {info.cluster_id}")
    return 0
