"""Read carebus coordination alerts from Kafka and print them, one JSON line each.

A starting point for an integrator's own consumer. It needs only kafka-python
and fastavro, plus the schema files (``schemas/*.avsc`` in the carebus repository)::

    pip install kafka-python fastavro
    python examples/consume_alerts.py --provider XRA --from-beginning

It reads one provider's alert topic (``<prefix>.alerts.provider.<CODE>``) or, without
``--provider``, every alert (``<prefix>.alerts``); decodes each record (Avro
single-object encoding: ``C3 01``, the writer schema's 8-byte CRC-64-AVRO
fingerprint, then the Avro body); prints it; and commits the consumer group's
offset only after printing, so an alert is never skipped (it may be printed twice
after a crash: use ``dedup_key`` to recognise a repeat).

The patient key is replaced by ``***`` unless ``--show-patient`` is given: a
terminal is no place for NHS numbers. Your own consumer hands it to your system.

Alerts are written in Kafka transactions, so the consumer reads with
``isolation_level="read_committed"``: it never sees an alert whose transaction
was aborted.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form
from kafka import KafkaConsumer

MAGIC = b"\xc3\x01"
HEADER_LENGTH = 10
ALERT = "carebus.alerts.Alert"
DEFAULT_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


class Decoder:
    """Decodes single-object encoded records written with any known schema version.

    ``directory`` holds one ``<namespace>.<Name>.avsc`` per named type (fastavro
    resolves the references between files); ``directory/released/<version>/`` the
    schemas of earlier releases, whose records are read into the current schema.
    """

    def __init__(self, directory: Path) -> None:
        self.writers: dict[bytes, tuple[str, Any]] = {}
        current = self._load(directory)
        self.readers = current
        releases = directory / "released"
        for version in sorted(releases.iterdir()) if releases.is_dir() else ():
            self._load(version)
        if not current:
            raise SystemExit(f"no schemas found in {directory}")

    def _load(self, directory: Path) -> dict[str, Any]:
        loaded = {}
        for path in sorted(directory.glob("*.avsc")):
            schema = load_schema(str(path))
            if not isinstance(schema, dict) or schema.get("type") != "record":
                continue
            name = schema["name"]
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
            self.writers.setdefault(fp, (name, schema))
            loaded[name] = schema
        return loaded

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """The schema name and the record of one Kafka record value."""
        if len(data) < HEADER_LENGTH or not data.startswith(MAGIC):
            raise ValueError("not Avro single-object encoding")
        known = self.writers.get(data[2:HEADER_LENGTH])
        if known is None:
            raise ValueError(f"unknown schema fingerprint {data[2:HEADER_LENGTH].hex()}")
        name, writer = known
        body = io.BytesIO(data[HEADER_LENGTH:])
        record = schemaless_reader(body, writer, self.readers.get(name, writer))
        if not isinstance(record, dict):
            raise ValueError("the record is not an Avro record")
        return name, record


def printable(record: dict[str, Any], *, show_patient: bool) -> str:
    """An alert as one JSON line; the patient masked unless asked for."""
    out = dict(record)
    if not show_patient:
        out["patient"] = "***"
        # The dedup key starts "<rule>:<patient key>:": mask that part too.
        out["dedup_key"] = str(out["dedup_key"]).replace(str(record["patient"]), "***")
    return json.dumps(out, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--prefix", default="carebus", help="topic prefix (topics.prefix)")
    parser.add_argument("--provider", help="a provider code: read only its alert topic")
    parser.add_argument(
        "--group",
        default="consume-alerts-example",
        help="consumer group (its committed offsets say where to resume)",
    )
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="with no committed offset, start at the oldest alert (default: new ones only)",
    )
    parser.add_argument("--max", type=int, default=0, help="stop after this many alerts")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=0.0,
        help="stop after this many seconds without an alert (default: run until Ctrl-C)",
    )
    parser.add_argument("--show-patient", action="store_true", help="print the patient key")
    parser.add_argument("--schemas", type=Path, default=DEFAULT_SCHEMAS, help="schema directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    decoder = Decoder(args.schemas)
    topic = f"{args.prefix}.alerts"
    if args.provider:
        topic = f"{args.prefix}.alerts.provider.{args.provider}"
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=args.bootstrap_servers,
        group_id=args.group,
        isolation_level="read_committed",
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        enable_auto_commit=False,
    )
    count = 0
    last = time.monotonic()
    try:
        while not args.max or count < args.max:
            batch = consumer.poll(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    name, alert = decoder.decode(record.value)
                    if name != ALERT:
                        continue
                    print(printable(alert, show_patient=args.show_patient), flush=True)
                    count += 1
            if batch:
                consumer.commit()
                last = time.monotonic()
            elif args.idle_timeout and time.monotonic() - last > args.idle_timeout:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    print(f"{count} alert(s) read from {topic}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
