"""Throughput of ``carebus simulate`` on a synthetic regional feed, and where the time goes.

The feed (:data:`MESSAGES` messages, NHS-style HL7 2.4, CR segment ends) is written
to a temporary file by a generator, one message at a time. Patients arrive in
blocks of :data:`BLOCK` and follow journeys chosen to exercise every rule: hospice
discharges (with and without the hospice admission), suspected-cancer referrals
(booked, seen, with and without the outcome document), end-of-life patients with
repeated emergency admissions, deaths with pending appointments and activity after
death, repeated tests across providers, local identifiers merged by ``ADT^A40``,
and routine contacts. Consecutive messages are :data:`STEP` apart in event time,
so the feed spans about a month and deadlines fall due throughout.

Measured in one run over the same file, the stages interleaved, :data:`ROUNDS`
rounds, best wall clock of each (the machine is shared: the best round is the one
least disturbed):

1. baseline, *parse only*: ``iter_feed`` + ``parse_message``;
2. parse + ``connectors.translate.translate``;
3. *rules only*: the rule engine (:class:`carebus.simulate.Simulation`) over the
   events of every message, translated beforehand and not timed, every alert
   serialised to a JSON line written to a null sink;
4. ``carebus simulate`` as the command runs it (:class:`carebus.simulate.FeedRun`
   under :func:`carebus.simulate.batch_gc`: parse, translate, rules, every alert
   serialised to a JSON line, written to a null sink).

The ratio of 4 to 1 says what the whole pipeline costs against just reading HL7;
stage 3 shows the rules' share directly. Run with ``python -m benchmarks simulate``.
Target: simulate >= 20,000 events/s.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from carebus.errors import MessageRejected
from carebus.simulate import FeedRun, Simulation, batch_gc
from carebus.synth.nhs import numbered as nhs_number
from connectors.hl7 import iter_feed, parse_message
from connectors.translate import Event, translate
from streams.alert import Alert
from streams.region import Region, parse_region

MESSAGES = 100_000
ROUNDS = 3
BLOCK = 1_500
STEP = timedelta(seconds=25)
START = datetime(2026, 1, 5, 8, 0)  # Europe/London wall-clock time, as senders write it
TARGET_EVENTS_PER_S = 20_000
RECEIVED = datetime(2026, 1, 5, tzinfo=UTC)

HOSPITALS = ("RX1", "RX2")
GPS = ("G0001", "G0002", "G0003")
REGION = {
    "providers": {
        "RX1": {"name": "Example General Hospital", "kind": "hospital"},
        "RX2": {"name": "Example Community Hospital", "kind": "hospital"},
        "G0001": {"name": "Example Surgery", "kind": "gp"},
        "G0002": {"name": "Second Surgery", "kind": "gp"},
        "G0003": {"name": "Third Surgery", "kind": "gp"},
        "HSP01": {"name": "Example Hospice", "kind": "hospice"},
        "CM01": {"name": "Community Nursing", "kind": "community"},
    },
}

T = TypeVar("T")
Step = Callable[[str, str], str]  # (HL7 timestamp, control id) -> message


# -- messages ---------------------------------------------------------------------------


def _seg(name: str, fields: dict[int, str]) -> str:
    values = [""] * max(fields)
    for index, text in fields.items():
        values[index - 1] = text
    return name + "|" + "|".join(values)


def _msh(sender: str, at: str, kind: str, control_id: str, receiver: str = "XRHUB") -> str:
    return f"MSH|^~\\&|EPR|{sender}|CAREBUS|{receiver}|{at}||{kind}|{control_id}|P|2.4|||AL|NE"


def _pid(ids: str, died: str | None = None) -> str:
    fields = {
        1: "1",
        3: ids,
        5: "TESTER^PAT",
        7: "19450312",
        8: "F",
        11: "1 HIGH ST^^STOKE-ON-TRENT^^ST4 1AA^GBR",
    }
    if died:
        fields[29], fields[30] = died, "Y"
    return _seg("PID", fields)


def _adt(trigger: str, sender: str, ids: str, *, kind: str = "E", dest: str = "") -> Step:
    structure = {"A03": "ADT_A03", "A08": "ADT_A01"}.get(trigger, "ADT_A01")

    def build(at: str, cid: str) -> str:
        pv1 = {1: "1", 2: "I", 3: f"WARD7^^^{sender}", 4: kind, 19: f"V{cid}", 44: at}
        if trigger == "A03":
            pv1[37], pv1[45] = dest, at
        return "\r".join(
            [
                _msh(sender, at, f"ADT^{trigger}^{structure}", cid),
                f"EVN|{trigger}|{at}",
                _pid(ids),
                _seg("PV1", pv1),
            ]
        )

    return build


def _death(sender: str, ids: str) -> Step:
    def build(at: str, cid: str) -> str:
        return "\r".join(
            [_msh(sender, at, "ADT^A08^ADT_A01", cid), f"EVN|A08|{at}", _pid(ids, died=at)]
        )

    return build


def _referral(ids: str, to: str, priority: str = "2WW") -> Step:
    def build(at: str, cid: str) -> str:
        return "\r".join(
            [
                _msh("G0001", at, "REF^I12^REF_I12", cid, receiver=to),
                f"RF1|P^Pending|{priority}|MED^Medical|||R{cid}|{at}|||Suspected cancer",
                _pid(ids),
            ]
        )

    return build


def _booking(sender: str, ids: str, days_ahead: int) -> Step:
    def build(at: str, cid: str) -> str:
        start = (datetime.strptime(at, "%Y%m%d%H%M%S") + timedelta(days=days_ahead)).strftime(
            "%Y%m%d%H%M%S"
        )
        return "\r".join(
            [
                _msh(sender, at, "SIU^S12^SIU_S12", cid),
                f"SCH|P{cid}|F{cid}||||NEW|Clinic||30|MIN|^^30^{start}||||||||||||||Booked",
                _pid(ids),
                "RGS|1",
                f"AIS|1||CLINIC^Outpatient clinic|{start}",
            ]
        )

    return build


def _order(sender: str, ids: str, code: str = "4548-4") -> Step:
    def build(at: str, cid: str) -> str:
        return "\r".join(
            [
                _msh(sender, at, "ORM^O01^ORM_O01", cid),
                _pid(ids),
                f"ORC|NW|O{cid}^{sender}|||SC||||{at}",
                f"OBR|1|O{cid}^{sender}||{code}^HbA1c^LN|||{at}",
            ]
        )

    return build


def _result(sender: str, ids: str, code: str = "4548-4") -> Step:
    def build(at: str, cid: str) -> str:
        obr = _seg("OBR", {1: "1", 2: f"O{cid}", 4: f"{code}^HbA1c^LN", 7: at, 25: "F"})
        return "\r".join(
            [
                _msh(sender, at, "ORU^R01^ORU_R01", cid),
                _pid(ids),
                obr,
                f"OBX|1|NM|{code}^HbA1c^LN||48|mmol/mol|20-41|H|||F",
            ]
        )

    return build


def _outcome(sender: str, ids: str) -> Step:
    def build(at: str, cid: str) -> str:
        txa = _seg("TXA", {1: "1", 2: "CANCER-OUTCOME", 3: "TX", 4: at, 12: f"D{cid}", 17: "AU"})
        return "\r".join(
            [_msh(sender, at, "MDM^T02^MDM_T02", cid), f"EVN|T02|{at}", _pid(ids), txa]
        )

    return build


def _register(ids: str) -> Step:
    def build(at: str, cid: str) -> str:
        prb = f"PRB|AD|{at}|1403151000000103^On palliative care register^SCT|P{cid}"
        return "\r".join([_msh("G0002", at, "PPR^PC1^PPR_PC1", cid), _pid(ids), prb])

    return build


def _merge(ids: str, retired: str) -> Step:
    def build(at: str, cid: str) -> str:
        return "\r".join(
            [_msh("RX2", at, "ADT^A40^ADT_A39", cid), f"EVN|A40|{at}", _pid(ids), f"MRG|{retired}"]
        )

    return build


def journey(index: int) -> list[Step]:
    """The messages of patient ``index``, in order."""
    nhs = nhs_number(index)
    ids = f"{nhs}^^^NHS^NH~M{index:07d}^^^RX1^MR"
    hospital = HOSPITALS[index % 2]
    gp = GPS[index % 3]
    kind = index % 8
    if kind == 0:  # hospice discharge; every other one is admitted by the hospice
        steps = [
            _adt("A04", gp, ids),
            _adt("A01", hospital, ids),
            _adt("A03", hospital, ids, dest="88"),
        ]
        return steps + ([_adt("A01", "HSP01", ids)] if index % 16 == 0 else [])
    if kind == 1:  # suspected cancer; some booked and seen, some with the outcome
        steps = [_adt("A04", gp, ids), _referral(ids, hospital)]
        if index % 3:
            steps += [_booking(hospital, ids, 5), _adt("A04", hospital, ids, kind="R")]
        return steps + ([_outcome(hospital, ids)] if index % 5 == 0 else [])
    if kind == 2:  # end of life: on the register, admitted again and again
        steps = [_adt("A04", gp, ids), _adt("A08", "CM01", ids), _register(ids)]
        for _ in range(3):
            steps += [_adt("A01", hospital, ids), _adt("A03", hospital, ids, dest="19")]
        return steps
    if kind == 3:  # death with appointments pending, and activity after it
        return [
            _adt("A04", gp, ids),
            _booking(hospital, ids, 40),
            _death("HSP01", ids),
            _order(gp, ids),
        ]
    if kind == 4:  # the same test repeated at another provider
        return [_adt("A04", gp, ids), _result(hospital, ids), _order(gp, ids), _result(gp, ids)]
    if kind == 5:  # local identifier only, then merged into the NHS number
        local = f"L{index:07d}^^^RX2^MR"
        return [
            _adt("A01", "RX2", local),
            _merge(ids, local),
            _adt("A03", "RX2", local, dest="19"),
            _adt("A04", gp, ids),
        ]
    return [_adt("A04", gp, ids), _adt("A08", gp, ids), _adt("A01", hospital, ids, kind="R")]


def messages(count: int) -> Iterator[bytes]:
    """``count`` messages in event-time order, ``STEP`` apart."""
    at = START
    sent = 0
    first = 0
    while True:
        journeys = [journey(i) for i in range(first, first + BLOCK)]
        first += BLOCK
        for step in range(max(map(len, journeys))):
            for steps in journeys:
                if step < len(steps):
                    sent += 1
                    yield steps[step](at.strftime("%Y%m%d%H%M%S"), f"B{sent:08d}").encode() + b"\r"
                    if sent == count:
                        return
                    at += STEP


def write_feed(path: Path, count: int) -> int:
    """Write the feed to ``path`` without holding it in memory; return its size in bytes."""
    size = 0
    with path.open("wb") as out:
        chunk: list[bytes] = []
        for raw in messages(count):
            chunk.append(raw)
            if len(chunk) == 1_000:
                size += out.write(b"".join(chunk))
                chunk.clear()
        size += out.write(b"".join(chunk))
    return size


# -- the measurements -----------------------------------------------------------------


def parse_only(data: bytes) -> tuple[int, int]:
    """Baseline: split and parse every message. Returns (messages, rejected)."""
    count = rejected = 0
    for item in iter_feed(data):
        count += 1
        try:
            parse_message(item.raw)
        except MessageRejected:
            rejected += 1
    return count, rejected


def parse_translate(data: bytes) -> tuple[int, int]:
    """Parse and translate every message. Returns (events, rejected)."""
    events = rejected = 0
    for item in iter_feed(data):
        try:
            events += len(translate(parse_message(item.raw), raw=item.raw, received_time=RECEIVED))
        except MessageRejected:
            rejected += 1
    return events, rejected


def translated(data: bytes) -> list[list[Event]]:
    """The events of every message, for the rules-only stage (not timed)."""
    batches = []
    for item in iter_feed(data):
        try:
            batches.append(translate(parse_message(item.raw), raw=item.raw, received_time=RECEIVED))
        except MessageRejected:
            continue
    return batches


def rules_only(batches: list[list[Event]], region: Region) -> tuple[int, int]:
    """The rule engine alone over pre-translated events, alerts as JSON lines to a null sink.

    Returns (events, alerts).
    """
    events = alerts = 0
    with open(os.devnull, "w", encoding="utf-8") as sink:
        simulation = Simulation(region)
        for batch in batches:
            events += len(batch)
            for alert in simulation.message(batch):
                sink.write(alert.to_json())
                sink.write("\n")
                alerts += 1
        for alert in simulation.finish():
            sink.write(alert.to_json())
            sink.write("\n")
            alerts += 1
    return events, alerts


def simulate(data: bytes, region: Region) -> FeedRun:
    """The whole of ``carebus simulate``, alerts serialised as JSON lines to a null sink."""
    with open(os.devnull, "w", encoding="utf-8") as sink:

        def emit(alert: Alert) -> None:
            sink.write(alert.to_json())
            sink.write("\n")

        run = FeedRun(region=region, received_time=RECEIVED, on_alert=emit, on_rejection=print)
        with batch_gc():
            run.run([("bench", data)])
    return run


def _timed(fn: Callable[[], T]) -> tuple[float, float, T]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


class _Best:
    """The best (least wall clock) of the rounds of one stage, with its CPU time."""

    def __init__(self) -> None:
        self.wall = float("inf")
        self.cpu = float("inf")

    def time(self, fn: Callable[[], T]) -> T:
        wall, cpu, result = _timed(fn)
        self.wall = min(self.wall, wall)
        self.cpu = min(self.cpu, cpu)
        return result


def main() -> None:
    region = parse_region(REGION)
    with tempfile.TemporaryDirectory(prefix="carebus-bench-") as tmp:
        path = Path(tmp) / "feed.hl7"
        wall, _, size = _timed(lambda: write_feed(path, MESSAGES))
        print(f"feed: {MESSAGES:,} messages, {size / 1e6:.1f} MB, written in {wall:.1f} s")
        data = path.read_bytes()
    with batch_gc():
        batches = translated(data)

    parse, both, rules, whole = _Best(), _Best(), _Best(), _Best()
    for _ in range(ROUNDS):
        with batch_gc():
            count, rejected = parse.time(lambda: parse_only(data))
            events, t_rejected = both.time(lambda: parse_translate(data))
            r_events, r_alerts = rules.time(lambda: rules_only(batches, region))
        run = whole.time(lambda: simulate(data, region))
    stats = run.stats
    if rejected or t_rejected or stats.rejected:
        print(f"WARNING: rejected {rejected} / {t_rejected} / {stats.rejected} messages")
    if (r_events, r_alerts) != (stats.events, stats.alerts):
        print(f"WARNING: rules-only saw {r_events} events / {r_alerts} alerts")

    def rate(n: int, seconds: float) -> str:
        return f"{n / seconds:>10,.0f}/s"

    print(f"best of {ROUNDS} rounds, stages interleaved")
    print(f"{'phase':<40} {'wall s':>7} {'cpu s':>7} {'throughput':>20}")
    print(
        f"{'baseline: parse only':<40} {parse.wall:7.2f} {parse.cpu:7.2f} "
        f"{rate(count, parse.wall)} messages"
    )
    print(
        f"{'parse + translate':<40} {both.wall:7.2f} {both.cpu:7.2f} "
        f"{rate(events, both.wall)} events"
    )
    print(
        f"{'rules + JSON (pre-translated events)':<40} {rules.wall:7.2f} {rules.cpu:7.2f} "
        f"{rate(r_events, rules.wall)} events"
    )
    print(
        f"{'simulate (parse+translate+rules+JSON)':<40} {whole.wall:7.2f} {whole.cpu:7.2f} "
        f"{rate(stats.events, whole.wall)} events"
    )
    print(
        f"run: {stats.messages:,} messages, {stats.events:,} events, {stats.alerts:,} alerts, "
        f"{stats.patients:,} patients"
    )
    per_event = 1e6 / stats.events
    print(
        f"where the time goes, per event (cpu): parse {parse.cpu * per_event:.1f} us, "
        f"translate {(both.cpu - parse.cpu) * per_event:.1f} us, "
        f"rules + alerts {rules.cpu * per_event:.1f} us (measured alone; "
        f"simulate - parse+translate: {(whole.cpu - both.cpu) * per_event:.1f} us)"
    )
    parse_rate = count / parse.wall
    sim_rate = stats.events / whole.wall
    print(
        f"ratio rules-only / parse-only baseline: {r_events / rules.wall / parse_rate:.2f}x, "
        f"rules-only / parse+translate: {r_events / rules.wall / (events / both.wall):.2f}x "
        f"(events/s against messages/s and events/s)"
    )
    print(
        f"ratio simulate / parse-only baseline: {sim_rate / parse_rate:.2f}x "
        f"(events/s against messages/s), simulate / parse+translate: "
        f"{sim_rate / (events / both.wall):.2f}x"
    )
    verdict = "met" if sim_rate >= TARGET_EVENTS_PER_S else "NOT met"
    print(f"target simulate >= {TARGET_EVENTS_PER_S:,} events/s: {verdict} ({sim_rate:,.0f}/s)")


if __name__ == "__main__":
    main()
