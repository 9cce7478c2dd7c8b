"""``carebus translate FEED...``: HL7 v2 feeds to events, as JSON lines.

Standard output gets one line per event, ``{"schema": ..., "record": ...}`` (see
:mod:`schemas.jsonform`). Standard error gets one line per rejected message::

    FILE:POSITION: REASON (control id CONTROL_ID): DETAIL

(the control id part only when MSH-10 could be read; never patient data), and
last, exactly ``N messages: E events, R rejected``. A FEED of ``-`` is standard
input. Exit status 0 when every message of every feed was read (messages rejected
for their content, such as an untranslated type, are reported and do not count);
1 when some message could not be read as HL7 (``unparseable``); 2 when a feed
could not be read at all (the others are still translated). Never a traceback for
a bad message.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from carebus.errors import MessageRejected, TranslationFailed, Unparseable
from carebus.settings import Settings

EXIT_UNPARSEABLE = 1
EXIT_UNREADABLE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "feeds",
        metavar="FEED",
        nargs="+",
        help="HL7 v2 feed file: MLLP-framed, plain, or FHS/BHS batch ('-' for standard input)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.hl7 import iter_feed, parse_message
    from connectors.hl7.charset import check_fallback
    from connectors.translate import translate
    from schemas.jsonform import dumps

    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    received_time = datetime.now(UTC)
    fallback = check_fallback(settings.translate.fallback_charset)  # ConfigError up front
    messages = events = rejected = 0
    status = 0
    for name in args.feeds:
        try:
            data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as exc:
            err.write(f"carebus translate: cannot read {name}: {exc.strerror or exc}\n")
            status = EXIT_UNREADABLE
            continue
        for item in iter_feed(data):
            messages += 1
            try:
                message = parse_message(item.raw, fallback_charset=fallback)
                control_id = message.control_id
            except Exception as exc:  # any failure to read is a rejection, not a traceback
                unreadable = exc if isinstance(exc, MessageRejected) else _unreadable(exc)
                rejected += 1
                err.write(_rejection_line(name, item.position, unreadable))
                if isinstance(unreadable, Unparseable):
                    status = max(status, EXIT_UNPARSEABLE)
                continue
            try:
                translated = translate(message, raw=item.raw, received_time=received_time)
            except Exception as exc:
                failed = exc if isinstance(exc, MessageRejected) else _failed(exc, control_id)
                rejected += 1
                err.write(_rejection_line(name, item.position, failed))
                continue
            events += len(translated)
            for event in translated:
                out.write(dumps(event.schema, event.record))
                out.write("\n")
    out.flush()
    err.write(f"{messages} messages: {events} events, {rejected} rejected\n")
    err.flush()
    return status


def _rejection_line(feed: str, position: int, exc: MessageRejected) -> str:
    control = f" (control id {exc.control_id})" if exc.control_id else ""
    return f"{feed}:{position}: {exc.reason}{control}: {exc.detail}\n"


def _unreadable(exc: Exception) -> MessageRejected:
    return Unparseable(f"message could not be read ({type(exc).__name__})")


def _failed(exc: Exception, control_id: str) -> MessageRejected:
    return TranslationFailed(
        f"message could not be translated ({type(exc).__name__})", control_id=control_id or None
    )
