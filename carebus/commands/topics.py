"""``carebus topics apply``: create missing topics and report drift.

Prints one line per declared topic: ``created``, ``ok``, ``fixed`` or ``drift``.
Exit status 0 when every topic matches its declaration (after ``--fix``, if given),
1 when drift remains. Outside the local development broker, settings that declare
replication factor < 3 or ``min.insync.replicas`` < 2 are refused before anything is
created, unless ``topics.allow_low_durability`` is true (:mod:`carebus.durability`).
"""

from __future__ import annotations

import argparse
import sys

from carebus.settings import Settings
from carebus.topics import TopicReport, apply


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("apply",))
    parser.add_argument(
        "--fix",
        action="store_true",
        help="also set drifted config values and add missing partitions "
        "(adding partitions moves keys to other partitions)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from carebus.durability import require_durable

    require_durable(settings, (), role="topics apply")
    reports = apply(settings, fix=args.fix)
    for report in reports:
        print(format_report(report, fix=args.fix))
    drifted = [r for r in reports if r.status == "drift"]
    if not drifted:
        return 0
    if not args.fix and any(d.fixable for r in drifted for d in r.drift):
        print(
            "carebus: drift found; `carebus topics apply --fix` repairs what it can",
            file=sys.stderr,
        )
    return 1


def format_report(report: TopicReport, *, fix: bool) -> str:
    """One line for a topic: its status, name and what differs or was repaired."""
    notes = [f"{d.setting} {d.actual} -> {d.declared}" for d in report.fixed]
    for d in report.drift:
        if d.fixable:
            notes.append(str(d) if fix else f"{d} (--fix repairs)")
        elif d.setting == "partitions":
            notes.append(f"{d} (partitions cannot be removed)")
        else:
            notes.append(f"{d} (needs a partition reassignment)")
    line = f"{report.status:<8} {report.name}"
    return line + (": " + "; ".join(notes) if notes else "")
