"""``carebus alerts``: acknowledge, resolve or look up an alert by its dedup key.

``ack`` and ``resolve`` write a ``carebus.alerts.AlertStatusChange`` to the status
topic (keyed by dedup key), exactly as an integrator's system would; ``show`` asks
the worker's web endpoint (``worker.web_host``:``worker.web_port``, or ``--url``)
for the alert and its status, and prints it as JSON, sending the bearer token of
``worker.web_token_file`` (the lookup answers 401 without it).
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

from carebus.errors import CarebusError, KafkaUnavailable, PublishFailed
from carebus.settings import Settings
from carebus.webauth import bearer_header, read_token

STATUS_SCHEMA = "carebus.alerts.AlertStatusChange"
ACTIONS = {"ack": "ACKNOWLEDGED", "resolve": "RESOLVED"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in (
        ("ack", "acknowledge an alert: someone is on it"),
        ("resolve", "resolve an alert: nothing more to do"),
    ):
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("dedup_key", metavar="DEDUP_KEY")
        cmd.add_argument("--by", required=True, help="who (a user or system name)")
        cmd.add_argument("--note", default=None, help="a free-text note")
    show = sub.add_parser("show", help="print an alert and its status (JSON)")
    show.add_argument("dedup_key", metavar="DEDUP_KEY")
    show.add_argument("--url", default=None, help="the worker's web address")
    show.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "show":
        w = settings.worker
        scheme = "https" if w.web_tls_certfile is not None else "http"
        url = args.url or f"{scheme}://{w.web_host}:{w.web_port}"
        token = (
            read_token(w.web_token_file, "worker.web_token_file")
            if w.web_token_file is not None
            else None
        )
        return show(url, args.dedup_key, timeout_s=args.timeout, token=token)
    change = status_change(args.dedup_key, ACTIONS[args.action], args.by, args.note)
    publish_change(settings, change)
    print(f"{change['action'].lower()} {args.dedup_key}")
    return 0


def status_change(
    dedup_key: str, action: str, by: str, note: str | None, at: datetime | None = None
) -> dict[str, Any]:
    """An ``AlertStatusChange`` record, made now unless ``at`` is given."""
    if not dedup_key:
        raise CarebusError("the dedup key is empty")
    return {
        "dedup_key": dedup_key,
        "action": action,
        "by": by,
        "at": at or datetime.now(UTC),
        "note": note,
    }


def publish_change(settings: Settings, change: dict[str, Any]) -> None:
    """Write ``change`` to the status topic and wait for acks=all."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    import schemas.codec
    from carebus.kafka import kafka_python_config
    from carebus.topics import TopicNames

    topic = TopicNames.from_settings(settings.topics).alert_status
    value = schemas.codec.encode(STATUS_SCHEMA, change)
    try:
        producer = KafkaProducer(**kafka_python_config(settings), acks="all")
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"cannot connect to Kafka: {type(exc).__name__}") from exc
    try:
        producer.send(
            topic,
            key=change["dedup_key"].encode("utf-8"),
            value=value,
            headers=[("carebus-schema", STATUS_SCHEMA.encode())],
        ).get(timeout=settings.kafka.request_timeout_s)
    except (KafkaError, OSError) as exc:
        raise PublishFailed(f"status change not written to {topic}: {type(exc).__name__}") from exc
    finally:
        producer.close()


def show(url: str, dedup_key: str, *, timeout_s: float, token: str | None = None) -> int:
    """Print the worker's answer for ``dedup_key``; 0 when known, 1 when not."""
    path = f"{url.rstrip('/')}/alerts/{urllib.parse.quote(dedup_key, safe='')}/"
    request = urllib.request.Request(path, headers=bearer_header(token) if token else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise CarebusError(
                "the worker refused the lookup (401): worker.web_token_file must hold "
                "the worker's token"
            ) from exc
        if exc.code != 404:
            raise CarebusError(f"the worker answered HTTP {exc.code}") from exc
        print(json.dumps(json.load(exc), indent=2))
        return 1
    except (urllib.error.URLError, OSError) as exc:
        raise CarebusError(f"cannot reach the worker at {url}") from exc
    print(json.dumps(body, indent=2))
    return 0
