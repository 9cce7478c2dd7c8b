"""Throughput of the HL7 v2 hot path on a realistic mixed feed, against python-hl7 and hl7apy.

The feed has :data:`FEED_SIZE` messages: half are the shared corpus's messages of the
types carebus translates (ADT, ORU, ORM, SIU, MDM, REF, PPR, OML; LF line ends, as
in the files), each copy with its own control id and patient id; half are generated
NHS-style HL7 2.4 messages (NHS numbers valid by modulus 11, ODS codes, CR line
ends). Measured, in one run:

1. carebus ``iter_feed`` over the whole feed as one MLLP file;
2. carebus ``parse_message`` (bytes in, decoding included);
3. carebus parse + ``connectors.translate.translate`` + ``schemas.codec.encode``;
4. python-hl7 ``hl7.parse`` and 5. hl7apy ``parser.parse_message`` on evenly spaced
   samples of the same messages (bounded in time: both are slow), given text with CR
   line ends prepared outside the timing (an advantage for them).

Ratios compare carebus with each baseline on exactly the messages the baseline
processed. Run with ``python -m benchmarks translate``.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from carebus.errors import MessageRejected
from carebus.synth.nhs import numbered as nhs_number
from connectors.hl7 import frame, iter_feed, parse_message

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "fhir-converter-hl7v2"
SUPPORTED_TYPES = frozenset({"ADT", "ORU", "ORM", "SIU", "MDM", "REF", "PPR", "OML"})
FEED_SIZE = 20_000
PATIENTS = 5_000
PARSE_ROUNDS = 3
PYTHON_HL7_SAMPLE, PYTHON_HL7_SECONDS = 4_000, 10.0
HL7APY_SAMPLE, HL7APY_SECONDS = 500, 12.0
RECEIVED = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

_FAMILY = ["SMITH", "JONES", "TAYLOR", "BROWN", "WILLIAMS", "WILSON", "JOHNSON", "DAVIES"]
_GIVEN = ["OLIVIA", "AMELIA", "ISLA", "OLIVER", "GEORGE", "HARRY", "NOAH", "JACK"]
_TRUSTS = ["RR8", "RAE", "RCF", "RWY", "RXF"]
_GPS = ["B86001", "B86002", "B82005", "B83010"]


# -- the feed ------------------------------------------------------------------------------


class _Template:
    """A corpus message split into lines, so that copies can get new ids."""

    def __init__(self, data: bytes) -> None:
        text = data.decode("utf-8-sig")
        self.terminator = "\r\n" if "\r\n" in text else ("\n" if "\n" in text else "\r")
        self.lines = [line for line in text.split(self.terminator) if line.strip()]
        self.fs = self.lines[0][3]
        encoding = self.lines[0].split(self.fs)[1]
        self.cs, self.rs = encoding[0], encoding[1]

    def copy(self, control_id: str, patient_id: str) -> bytes:
        lines = []
        for line in self.lines:
            fields = line.split(self.fs)
            if fields[0] == "MSH" and len(fields) > 9:
                fields[9] = control_id
            elif fields[0] in ("PID", "MRG") and len(fields) > 3 and fields[3]:
                reps = fields[3].split(self.rs)
                comps = reps[0].split(self.cs)
                comps[0] = patient_id if fields[0] == "PID" else f"OLD{patient_id}"
                reps[0] = self.cs.join(comps)
                fields[3] = self.rs.join(reps)
            lines.append(self.fs.join(fields))
        return (self.terminator.join(lines) + self.terminator).encode("utf-8")


def corpus_templates() -> list[_Template]:
    """The corpus messages whose types carebus translates."""
    templates = []
    for path in sorted(CORPUS.glob("*.hl7")):
        for item in iter_feed(path.read_bytes()):
            try:
                message = parse_message(item.raw)
            except MessageRejected:
                continue
            if message.message_type in SUPPORTED_TYPES:
                templates.append(_Template(item.raw))
    return templates


def nhs_message(index: int, rng: random.Random) -> bytes:
    """An NHS-style HL7 2.4 message (ADT, ORU, SIU or REF)."""
    patient = rng.randrange(PATIENTS)
    nhs = nhs_number(patient)
    trust = _TRUSTS[patient % len(_TRUSTS)]
    when = f"202403{1 + index % 28:02d}{8 + index % 10:02d}{index % 60:02d}00"
    kind = rng.choice(["A01", "A02", "A03", "A08", "A03", "R01", "S12", "I12"])
    mtype = {"R01": "ORU", "S12": "SIU", "I12": "REF"}.get(kind, "ADT")
    segments = [
        f"MSH|^~\\&|PAS|{trust}|CAREBUS|RYY|{when}||{mtype}^{kind}|NHS{index:07d}|P|2.4|||AL|NE",
        f"EVN|{kind}|{when}|||U123^OPERATOR^ANNE|{when}",
        f"PID|1||{nhs}^^^NHS^NH~M{patient:07d}^^^{trust}^PI||"
        f"{_FAMILY[patient % 8]}^{_GIVEN[patient % 7]}^^^MR||19{40 + patient % 60:02d}0101|"
        f"{'MF'[patient % 2]}|||{patient % 200} STATION ROAD^^LEEDS^^LS{patient % 30} 1AA^GBR^H"
        f"||||||||||||||||||01",
        f"PD1|||PRACTICE^^{_GPS[patient % 4]}|G{patient % 9000000:07d}^GP^GRACE",
    ]
    if mtype == "ADT":
        destination = "79" if kind == "A03" and index % 50 == 0 else "19"
        segments.append(
            f"PV1|1|I|{trust}WARD{index % 12}^BAY{index % 4}^BED{index % 6}^{trust}||||"
            f"C{index % 400:05d}^CONSULTANT^CARL|||180||||19|||||V{index:08d}|||||||||||||||||"
            f"{'1' if kind == 'A03' else ''}|{destination if kind == 'A03' else ''}|||||||{when}"
        )
    elif mtype == "ORU":
        segments.append(f"ORC|RE|PL{index}|FL{index}")
        segments.append(
            f"OBR|1|PL{index}|FL{index}|FBC^FULL BLOOD COUNT^L|||{when}|||||||||||||||{when}||HM|F"
        )
        for n, (code, value, units) in enumerate(
            [
                ("HB", "132", "g/L"),
                ("WBC", "6.1", "10*9/L"),
                ("PLT", "250", "10*9/L"),
                ("NA", "139", "mmol/L"),
            ],
            start=1,
        ):
            segments.append(f"OBX|{n}|NM|{code}^{code}^L||{value}|{units}|100-200|N|||F|||{when}")
    elif mtype == "SIU":
        segments.insert(1, f"SCH|PA{index}|FA{index}|||||ROUTINE^Routine|||30^MIN|^^30^{when}")
        segments.append(f"AIS|1||CARDIO^Cardiology clinic|{when}|||30|MIN")
    else:
        segments.insert(1, f"RF1|A^Accepted|R^Routine|MED^Medical|||RF{index}|{when}")
    return ("\r".join(segments) + "\r").encode("utf-8")


def build_feed(size: int = FEED_SIZE) -> list[bytes]:
    """``size`` messages: corpus-derived and NHS-style, alternating."""
    rng = random.Random(20240301)
    templates = corpus_templates()
    feed = []
    for index in range(size):
        if index % 2 == 0:
            template = templates[(index // 2) % len(templates)]
            patient = rng.randrange(PATIENTS)
            feed.append(template.copy(f"BENCH{index:07d}", f"P{patient:07d}"))
        else:
            feed.append(nhs_message(index, rng))
    return feed


# -- measuring -----------------------------------------------------------------------------


def _timed(
    fn: Callable[[Any], object], items: Sequence[Any], budget: float | None = None
) -> tuple[int, float]:
    """Run ``fn`` on items until done or ``budget`` seconds; (count, seconds)."""
    count = 0
    start = time.perf_counter()
    for item in items:
        fn(item)
        count += 1
        if budget is not None and time.perf_counter() - start > budget:
            break
    return count, time.perf_counter() - start


def _best(fn: Callable[[Any], object], items: Sequence[Any], rounds: int) -> float:
    """The best messages/s over ``rounds`` passes."""
    return max(len(items) / _timed(fn, items)[1] for _ in range(rounds))


def _load_pipeline() -> Callable[[bytes], int] | None:
    try:
        from connectors.translate import translate
        from schemas.codec import encode
    except ImportError:
        return None

    def pipeline(raw: bytes) -> int:
        try:
            events = translate(parse_message(raw), raw=raw, received_time=RECEIVED)
        except MessageRejected:
            return -1
        for event in events:
            encode(event.schema, event.record)
        return len(events)

    return pipeline


def _encoder_comparison(feed: Sequence[bytes]) -> None:
    """Justify schemas/_writer.py: fastavro's own writer against the generated one."""
    from io import BytesIO

    from fastavro import schemaless_writer

    from connectors.translate import translate
    from schemas import codec

    events = []
    for raw in feed[:5000]:
        try:
            events.extend(translate(parse_message(raw), raw=raw, received_time=RECEIVED))
        except MessageRejected:
            continue
    parsed = {e.schema: codec._WRITERS[e.schema].schema for e in events}

    def with_fastavro(event: Any) -> None:
        out = BytesIO()
        out.write(codec.schema_header(event.schema))
        schemaless_writer(out, parsed[event.schema], event.record)

    def with_codec(event: Any) -> None:
        codec.encode(event.schema, event.record)

    slow = _best(with_fastavro, events, 2)
    fast = _best(with_codec, events, 2)
    print(f"  Avro encode, {len(events):,} events (same bytes; tests prove it):", flush=True)
    _line("  fastavro schemaless_writer (baseline)", slow, unit="events/s")
    _line(
        "  schemas.codec.encode (generated writer)",
        fast,
        f"= {fast / slow:.1f}x fastavro",
        unit="events/s",
    )


def _decoder_comparison(feed: Sequence[bytes], rounds: int = 5) -> None:
    """Justify schemas/_reader.py: fastavro's own reader against ``schemas.codec.decode``.

    Both read the same single-object encoded events (fastavro given the parsed writer
    schema, as codec gave it before); CPU time, rounds interleaved, best of each.
    """
    from io import BytesIO

    from fastavro import schemaless_reader

    from connectors.translate import translate
    from schemas import codec

    encoded: list[bytes] = []
    for raw in feed[:5000]:
        try:
            events = translate(parse_message(raw), raw=raw, received_time=RECEIVED)
        except MessageRejected:
            continue
        encoded.extend(codec.encode(e.schema, e.record) for e in events)
    parsed = {codec.schema_header(n)[2:]: w.schema for n, w in codec._WRITERS.items()}
    header = codec.HEADER_LENGTH

    def with_fastavro() -> None:
        for data in encoded:
            schemaless_reader(BytesIO(data[header:]), parsed[data[2:header]], None)

    def with_codec() -> None:
        for data in encoded:
            codec.decode(data)

    differ = sum(
        codec.decode(d)[1] != schemaless_reader(BytesIO(d[header:]), parsed[d[2:header]], None)
        for d in encoded
    )

    def cpu_seconds(fn: Callable[[], None]) -> float:
        start = time.process_time()
        fn()
        return time.process_time() - start

    slow_seconds = fast_seconds = float("inf")
    for _ in range(rounds):
        slow_seconds = min(slow_seconds, cpu_seconds(with_fastavro))
        fast_seconds = min(fast_seconds, cpu_seconds(with_codec))
    slow, fast = len(encoded) / slow_seconds, len(encoded) / fast_seconds
    size = sum(len(data) for data in encoded) / max(1, len(encoded))
    print(
        f"  Avro decode, {len(encoded):,} events of {size:.0f} bytes on average "
        f"({differ} read differently; CPU time, best of {rounds} interleaved rounds):",
        flush=True,
    )
    _line("  fastavro schemaless_reader (baseline)", slow, unit="events/s")
    _line(
        "  schemas.codec.decode (generated reader)",
        fast,
        f"= {fast / slow:.1f}x fastavro",
        unit="events/s",
    )


def _as_cr_text(raw: bytes) -> str:
    text = raw.decode("utf-8")
    return text.replace("\r\n", "\r").replace("\n", "\r")


def _sample(feed: Sequence[bytes], size: int) -> list[bytes]:
    step = max(1, len(feed) // size)
    return list(feed[::step][:size])


def _line(label: str, rate: float, note: str = "", unit: str = "msg/s") -> None:
    print(f"  {label:<42} {rate:>11,.0f} {unit}  {note}", flush=True)


def main() -> None:
    started = time.perf_counter()
    feed = build_feed()
    size_mb = sum(map(len, feed)) / 1e6
    print(
        f"feed: {len(feed):,} messages ({size_mb:.1f} MB): half from {CORPUS.name} "
        f"({', '.join(sorted(SUPPORTED_TYPES))}), half NHS-style HL7 2.4",
        flush=True,
    )

    blob = b"".join(frame(raw) for raw in feed)
    _, seconds = _timed(lambda data: sum(1 for _ in iter_feed(data)), [blob])
    _line("carebus iter_feed (one MLLP file)", len(feed) / seconds)

    parse_rate = _best(parse_message, feed, PARSE_ROUNDS)
    _line("carebus parse_message", parse_rate, f"(best of {PARSE_ROUNDS} passes)")

    pipeline = _load_pipeline()
    pipeline_rate: float | None = None
    if pipeline is None:
        print("  translate: not available", flush=True)
    else:
        results = [pipeline(raw) for raw in feed[:200]]  # warm up schema loading
        start = time.perf_counter()
        results = [pipeline(raw) for raw in feed]
        pipeline_rate = len(feed) / (time.perf_counter() - start)
        events = sum(r for r in results if r > 0)
        rejected = sum(1 for r in results if r < 0)
        _line(
            "carebus parse + translate + encode",
            pipeline_rate,
            f"({events:,} events, {rejected:,} rejected)",
        )

    if pipeline is not None:
        _encoder_comparison(feed)
        _decoder_comparison(feed)

    import hl7

    texts = {id(raw): _as_cr_text(raw) for raw in _sample(feed, PYTHON_HL7_SAMPLE)}
    sample = _sample(feed, PYTHON_HL7_SAMPLE)
    done, seconds = _timed(lambda raw: hl7.parse(texts[id(raw)]), sample, PYTHON_HL7_SECONDS)
    hl7_rate = done / seconds
    _line(
        "python-hl7 hl7.parse",
        hl7_rate,
        f"({done:,} evenly spaced messages, capped at {PYTHON_HL7_SECONDS:.0f} s)",
    )
    hl7_same = sample[:done]

    from hl7apy.parser import parse_message as hl7apy_parse

    failures = 0

    def hl7apy_one(raw: bytes) -> None:
        nonlocal failures
        try:
            hl7apy_parse(apy_texts[id(raw)])
        except Exception:  # the baseline's own errors are counted, not fatal
            failures += 1

    apy_sample = _sample(feed, HL7APY_SAMPLE)
    apy_texts = {id(raw): _as_cr_text(raw) for raw in apy_sample}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done, seconds = _timed(hl7apy_one, apy_sample, HL7APY_SECONDS)
    apy_rate = done / seconds
    _line(
        "hl7apy parser.parse_message",
        apy_rate,
        f"({done:,} evenly spaced messages, capped at {HL7APY_SECONDS:.0f} s; {failures} raised)",
    )
    apy_same = apy_sample[:done]

    print("ratios: carebus on exactly the messages each baseline processed (whole-feed rate)")
    for baseline, rate, same in (
        ("python-hl7 hl7.parse", hl7_rate, hl7_same),
        ("hl7apy parse_message", apy_rate, apy_same),
    ):
        target = 10 if baseline.startswith("python-hl7") else 100
        parsed = _best(parse_message, same, PARSE_ROUNDS)
        print(
            f"  carebus parse_message / {baseline}: {parsed / rate:,.0f}x "
            f"({parse_rate / rate:,.0f}x)",
            flush=True,
        )
        if pipeline is not None and pipeline_rate is not None:
            full = _best(pipeline, same, 1)
            print(
                f"  carebus parse+translate+encode / {baseline}: {full / rate:,.0f}x "
                f"({pipeline_rate / rate:,.0f}x; target >= {target}x)",
                flush=True,
            )
    print(f"total benchmark time {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
