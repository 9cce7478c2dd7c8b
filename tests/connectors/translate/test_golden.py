"""Golden digest: translation output stays byte-identical through speed work.

The feed is the shared third-party corpus plus deterministic variations of its
messages (fields replaced by escapes, repetitions, sub-components, HL7 nulls, odd
date/times, deaths and discharge destinations; other line ends and character
sets; other delimiters) and repeated patients from several senders, so that the
memoised paths (patients, times, NHS numbers) are taken both cold and warm. The
digest covers every event's schema, key, record (``repr``, so types and time zones
count) and Avro encoding, and every rejection's class, reason, detail and field.
The pinned value was computed by the translator before the memoised, faster paths
were added: update it only for an intended change of output, and say why.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from carebus.errors import MessageRejected
from connectors.hl7 import iter_feed, parse_message
from connectors.translate import translate
from schemas import codec

REPO_ROOT = Path(__file__).resolve().parents[3]
CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "fhir-converter-hl7v2"

GOLDEN_DIGEST = "e6feb3426d50f6666b4e1c4dc715a5c76cf4c16c3277dd29f95b3a874ddddd5b"
VARIATIONS = 1_500

RECEIVED = (
    datetime(2026, 1, 5, tzinfo=UTC),
    datetime(2026, 3, 29, 0, 30, 0, 123456, tzinfo=UTC),
    datetime(2026, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
    datetime(2026, 10, 25, 1, 30),
)

#: Field values swapped in: escapes, delimiters inside values, nulls, odd times.
TRICKY = (
    '""',
    "\\F\\x",
    "a\\S\\b",
    "a\\E\\",
    "\\X41C3A9\\",
    "\\Xzz\\",
    "x\\.br\\y",
    "a&b",
    "a~b",
    "a^b^c",
    "^b",
    "9434765919^^^NHS^NH",
    "9434765918^^^NHS^NH~L1^^^RX1^MR",
    "L7^^^^MR",
    "~9434765919^^^NHS",
    "&x^y&z~q",
    "20260329013000",
    "20261025013000",
    "2026-01",
    "202603290130+0100",
    "20260101120000.1234-0530",
    "2026",
    "20260101",
    "202601011200",
    "20260101120000+2400",
    " 20260101 ",
    "19450312",
    "Y",
    "N",
    "79",
    "",
    "30",
    "1.5",
    "HR",
    "é",
    "\\H\\bold\\N\\",
    "abc\\",
)


def corpus() -> list[bytes]:
    """Every message of the corpus, as framed by iter_feed."""
    return [
        item.raw for path in sorted(CORPUS.glob("*.hl7")) for item in iter_feed(path.read_bytes())
    ]


def variations(messages: list[bytes], count: int, seed: int = 7) -> Iterator[bytes]:
    """``count`` deterministic variations of ``messages``."""
    rng = random.Random(seed)
    for _ in range(count):
        text = rng.choice(messages).decode("utf-8", "replace")
        end = "\r\n" if "\r\n" in text else ("\n" if "\n" in text and "\r" not in text else "\r")
        lines = text.split(end)
        for _ in range(rng.randint(1, 5)):
            i = rng.randrange(len(lines))
            fields = lines[i].split("|")
            if len(fields) < 2:
                continue
            j = rng.randrange(1, len(fields) + 3)
            if i == 0 and j <= 2:
                j = rng.choice([3, 4, 5, 6, 7, 10, 12, 18])
            fields.extend([""] * (j + 1 - len(fields)))
            fields[j] = rng.choice(TRICKY) if rng.random() < 0.8 else fields[j] + rng.choice(TRICKY)
            lines[i] = "|".join(fields)
        if rng.random() < 0.1:
            end = rng.choice(["\r", "\n", "\r\n"])
        text = end.join(lines)
        if rng.random() < 0.1 and text.startswith("MSH|^~\\&"):
            text = text.translate(str.maketrans("|^~\\&", "#$*!%"))
        data = text.encode(rng.choice(["utf-8", "utf-8", "latin-1"]), "replace")
        yield data


def patients(count: int) -> Iterator[bytes]:
    """ADT messages of a few patients from several senders, some with local ids only."""
    for n in range(count):
        sender = ("RX1", "RX2", "G0001")[n % 3]
        ids = ("9434765919^^^NHS^NH~M1^^^RX1^MR", "L1^^^^MR", "L2^^^RX2^MR")[n % 5 % 3]
        pd1 = "\rPD1|||PRACTICE^^B86001|G1^GP^GRACE" if n % 4 == 0 else ""
        died = "|||||||||||||||||||202601051200|Y" if n % 7 == 0 else ""
        yield (
            f"MSH|^~\\&|EPR|{sender}|CAREBUS|XRHUB|2026010{1 + n % 9}0800||ADT^A0{1 + n % 4}|"
            f"G{n}|P|2.4\rEVN|A01|2026010{1 + n % 9}0800\r"
            f"PID|1||{ids}||TESTER^PAT||19450312|F|||1 HIGH ST^^STOKE^^ST4 1AA{died}{pd1}\r"
            f"PV1|1|I|WARD7^^^{sender}||||||||||||||||V{n}|||||||||||||||||||"
            f"{'79' if n % 6 == 0 else '19'}"
        ).encode()


def feed() -> list[bytes]:
    """The whole golden feed."""
    messages = corpus()
    return messages + list(variations(messages, VARIATIONS)) + list(patients(60))


def outcome(raw: bytes, index: int, translate_fn: Any = translate, encode: Any = None) -> bytes:
    """What the translator makes of one message, as bytes to digest."""
    encode = encode or codec.encode
    try:
        events = translate_fn(
            parse_message(raw), raw=raw, received_time=RECEIVED[index % len(RECEIVED)]
        )
    except MessageRejected as exc:
        return repr(
            ("rejected", type(exc).__name__, exc.reason, exc.detail, exc.field, exc.control_id)
        ).encode()
    parts = []
    for event in events:
        parts.append(repr((event.schema, event.key, event.record)).encode("utf-8", "replace"))
        parts.append(encode(event.schema, event.record))
    return b"\x00".join(parts)


def digest(messages: list[bytes]) -> str:
    """The SHA-256 over every message's outcome."""
    sha = hashlib.sha256()
    for index, raw in enumerate(messages):
        sha.update(outcome(raw, index))
        sha.update(b"\x1e")
    return sha.hexdigest()


class TestGolden:
    def test_feed_outcomes_are_unchanged(self) -> None:
        """Events, encodings and rejections of the golden feed hash to the pinned digest."""
        assert digest(feed()) == GOLDEN_DIGEST

    def test_repeated_feed_gives_the_same_outcomes(self) -> None:
        """A second pass (memoised paths warm) gives what the first pass gave."""
        messages = feed()[:400]
        first = [outcome(raw, i) for i, raw in enumerate(messages)]
        second = [outcome(raw, i) for i, raw in enumerate(messages)]
        assert first == second
