"""``carebus engine-errors``: list the events the rule engine raised on, and replay them.

::

    carebus engine-errors list [--timeout S]
    carebus engine-errors replay (--all | --rule RULE | --at PARTITION:OFFSET ...) [--dry-run]

``list`` prints one JSON line per record of the engine-errors topic
(:mod:`streams.engine_errors`): where it is, its stage, rule, error type, the
consumed record's topic/partition/offset (``source_*``), the digest of its value
and when it failed. Never the key or the value (they are patient data).

``replay`` produces the selected ``event`` records again to the events topic
(same key, same partition, same value, the original headers plus
``carebus-replayed-from``), once the faulty rule is fixed and the worker runs the
fix. ``deadline`` records are not replayed: the deadline stays in the patient's
entry and fires again when the worker restarts. Replay a record once: the worker
applies each copy as a new event (alerts are not raised twice, since the engine
drops dedup keys it raised before, but the event is observed again). Exit status 0,
1 when Kafka cannot be reached, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

from carebus.errors import ConfigError, KafkaUnavailable, PublishFailed
from carebus.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("list", help="print the engine-errors records (JSON lines)")
    show.add_argument("--timeout", type=float, default=60.0, help="give up reading after S")
    replay = sub.add_parser("replay", help="produce failed events to the events topic again")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every event record")
    which.add_argument("--rule", help="the event records of this rule")
    which.add_argument(
        "--at",
        action="append",
        metavar="PARTITION:OFFSET",
        help="the record at this engine-errors partition and offset (repeatable)",
    )
    replay.add_argument("--dry-run", action="store_true", help="print what would be replayed")
    replay.add_argument("--timeout", type=float, default=60.0, help="give up reading after S")


@dataclass(frozen=True)
class Record:
    """One record of the engine-errors topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def run(args: argparse.Namespace, settings: Settings) -> int:
    from carebus.topics import TopicNames
    from streams.engine_errors import error_headers

    topic = TopicNames.from_settings(settings.topics).engine_errors
    records = read_all(settings, topic, timeout_s=args.timeout)
    if args.action == "list":
        for r in records:
            print(json.dumps(summary(r), sort_keys=True))
        return 0
    wanted = _positions(args.at) if args.at else None
    chosen = [
        r
        for r in records
        if (wanted is None or (r.partition, r.offset) in wanted)
        and (args.rule is None or error_headers(r.headers).get("rule") == args.rule)
    ]
    count = replay(settings, topic, chosen, dry_run=args.dry_run)
    print(f"{'would replay' if args.dry_run else 'replayed'} {count} of {len(chosen)} selected")
    return 0


def summary(record: Record) -> dict[str, Any]:
    """What ``list`` prints of a record, no patient data: its place on the engine-errors
    topic (``partition``, ``offset``: what ``--at`` takes), the consumed record's
    (``source_topic``, ``source_partition``, ``source_offset``) and the other error
    headers (``stage``, ``rule``, ``error``, ``message``, ``digest``, ``at``)."""
    from streams.engine_errors import error_headers

    ours = error_headers(record.headers)
    source = {f"source_{name}": ours.pop(name, None) for name in ("topic", "partition", "offset")}
    return {"partition": record.partition, "offset": record.offset, **source, **ours}


def _positions(values: list[str]) -> set[tuple[int, int]]:
    out = set()
    for value in values:
        partition, sep, offset = value.partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise ConfigError(f"--at {value!r}: expected PARTITION:OFFSET")
        out.add((int(partition), int(offset)))
    return out


def read_all(settings: Settings, topic: str, *, timeout_s: float) -> list[Record]:
    """Every record of ``topic`` now, partition by partition, in offset order."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from carebus.kafka import kafka_python_config

    records: list[Record] = []
    try:
        consumer = KafkaConsumer(**kafka_python_config(settings), group_id=None)
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"cannot connect to Kafka: {type(exc).__name__}") from exc
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"timed out reading {topic}")
            for batch in consumer.poll(timeout_ms=500).values():
                for rec in batch:
                    records.append(
                        Record(
                            rec.partition,
                            rec.offset,
                            rec.key,
                            rec.value or b"",
                            [(n, v or b"") for n, v in rec.headers],
                        )
                    )
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"cannot read {topic}: {type(exc).__name__}") from exc
    finally:
        consumer.close()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


def replay(settings: Settings, topic: str, records: list[Record], *, dry_run: bool) -> int:
    """Produce the replayable ones of ``records`` to the events topic; returns how many."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from carebus.kafka import kafka_python_config
    from carebus.topics import TopicNames
    from streams.engine_errors import replay_record

    events = TopicNames.from_settings(settings.topics).events
    todo = []
    for r in records:
        again = replay_record(r.key, r.value, r.headers, where=f"{topic}:{r.partition}:{r.offset}")
        if again is not None:
            todo.append(again)
            if dry_run:
                print(json.dumps(summary(r), sort_keys=True))
    if dry_run or not todo:
        return len(todo)
    try:
        producer = KafkaProducer(**kafka_python_config(settings), acks="all")
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"cannot connect to Kafka: {type(exc).__name__}") from exc
    try:
        sent = [
            producer.send(events, key=key, value=value, headers=headers, partition=partition)
            for key, value, headers, partition in todo
        ]
        for future in sent:
            future.get(timeout=settings.kafka.request_timeout_s)
    except (KafkaError, OSError) as exc:
        raise PublishFailed(f"replay to {events} failed: {type(exc).__name__}") from exc
    finally:
        producer.close()
    return len(todo)
