"""Tests for carebus/simulate.py and carebus/commands/simulate.py (``carebus simulate``)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_simulate
from carebus.cli import main
from carebus.simulate import FeedRun, Rejection
from streams.alert import Alert
from streams.region import load_region, parse_region

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT.parent / "shared" / "spec" / "examples"
EXAMPLE_FEEDS = sorted(EXAMPLES.glob("*.hl7"))
REGION = EXAMPLES / "region.yaml"


def _comparable(alert: dict[str, Any]) -> tuple[str, str, str, list[str]]:
    """What the examples README compares: rule, patient, raised_at to the minute, recipients."""
    raised = datetime.fromisoformat(alert["raised_at"]).astimezone(UTC)
    return (
        alert["rule"],
        alert["patient"],
        raised.strftime("%Y-%m-%dT%H:%M"),
        sorted(alert["recipients"]),
    )


def _simulate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[Any], str]:
    """Run ``carebus simulate ARGS``; return the exit status, alerts and standard error."""
    status = main(["simulate", *args])
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines()], err


# -- HL7 builders: the shape of the worked examples -----------------------------------


def _msg(
    sender: str,
    at: str,
    kind: str,
    control_id: str,
    body: list[str],
    *,
    receiver: str = "STAFFS",
) -> str:
    msh = f"MSH|^~\\&|EPR|{sender}|CAREBUS|{receiver}|{at}||{kind}|{control_id}|P|2.4|||AL|NE"
    return "\r".join([msh, *body]) + "\r"


def _pid(ids: str) -> str:
    return f"PID|1||{ids}||TESTER^PAT||19450312|F|||1 HIGH ST^^STOKE-ON-TRENT^^ST4 1AA^GBR"


def _discharge(sender: str, at: str, control_id: str, ids: str, destination: str = "88") -> str:
    pv1 = f"PV1|1|I|WARD7^^^{sender}||||||||||||||||V{control_id}" + "|" * 18
    pv1 += f"{destination}|||||||{at}|{at}"
    return _msg(sender, at, "ADT^A03^ADT_A03", control_id, [f"EVN|A03|{at}", _pid(ids), pv1])


def _admit(sender: str, at: str, control_id: str, ids: str) -> str:
    pv1 = f"PV1|1|I|WARD7^^^{sender}||||||||||||||||V{control_id}" + "|" * 25 + at
    return _msg(sender, at, "ADT^A01^ADT_A01", control_id, [f"EVN|A01|{at}", _pid(ids), pv1])


def _referral(at: str, control_id: str, ids: str) -> str:
    rf1 = f"RF1|P^Pending|2WW|MED^Medical|||R{control_id}|{at}|||Suspected cancer"
    return _msg("G0001", at, "REF^I12^REF_I12", control_id, [rf1, _pid(ids)], receiver="RX1")


def _booking(at: str, control_id: str, ids: str, start: str) -> str:
    sch = f"SCH|P{control_id}|F{control_id}||||NEW|Clinic||30|MIN|^^30^{start}||||||||||||||Booked"
    return _msg(
        "RX1",
        at,
        "SIU^S12^SIU_S12",
        control_id,
        [sch, _pid(ids), "RGS|1", f"AIS|1||CLINIC^Outpatient clinic|{start}"],
    )


def _merge(at: str, control_id: str, survivor: str, retired: str) -> str:
    return _msg(
        "RX1",
        at,
        "ADT^A40^ADT_A39",
        control_id,
        [f"EVN|A40|{at}", _pid(survivor), f"MRG|{retired}"],
    )


NHS_A = "9434797373^^^NHS^NH"
NHS_B = "9434797748^^^NHS^NH"
LOCAL = "MRN0999^^^RX1^MR"


def _feed(tmp_path: Path, *messages: str, name: str = "feed.hl7") -> Path:
    path = tmp_path / name
    path.write_text("".join(messages), encoding="utf-8")
    return path


class TestWorkedExamples:
    def test_the_examples_are_there(self) -> None:
        """The shared worked examples are found (at least the four of the spec's first version)."""
        assert len(EXAMPLE_FEEDS) >= 4

    @pytest.mark.parametrize("feed", EXAMPLE_FEEDS, ids=[f.stem for f in EXAMPLE_FEEDS])
    def test_example_gives_exactly_the_expected_alerts(
        self, feed: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """carebus simulate prints exactly the example's expected alerts, in order."""
        until = feed.with_suffix(".until").read_text(encoding="utf-8").strip()
        expected = [
            json.loads(line)
            for line in feed.with_suffix(".expected.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        status, alerts, _ = _simulate(capsys, str(feed), "--config", str(REGION), "--until", until)
        assert status == 0
        assert [_comparable(a) for a in alerts] == [_comparable(a) for a in expected]

    def test_output_lines_follow_the_spec_output(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Each line has the spec's keys, sorted unique recipients and an offset on raised_at."""
        _, alerts, _ = _simulate(capsys, *map(str, EXAMPLE_FEEDS), "--config", str(REGION))
        assert alerts
        for alert in alerts:
            assert set(alert) == {
                "rule",
                "patient",
                "raised_at",
                "recipients",
                "dedup_key",
                "evidence",
                "summary",
            }
            assert alert["recipients"] == sorted(set(alert["recipients"]))
            assert alert["recipients"]
            assert datetime.fromisoformat(alert["raised_at"]).utcoffset() is not None


class TestClock:
    def test_deadlines_of_all_patients_fire_in_time_order_before_a_later_message(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Deadlines due before a message fire first, across patients, earliest first."""
        feed = _feed(
            tmp_path,
            _discharge("RX1", "20260212100000", "M1", NHS_A),
            _discharge("RX1", "20260212090000", "M2", NHS_B),
            _admit("RX1", "20260215090000", "M3", LOCAL),
        )
        _, alerts, _ = _simulate(capsys, str(feed), "--config", str(REGION))
        assert [(a["rule"], a["evidence"][0]) for a in alerts] == [
            ("hospice-handoff-missed", "M2"),
            ("hospice-handoff-missed", "M1"),
            ("identity-unverified", "M3"),
        ]

    def test_without_until_the_clock_stops_at_the_last_event(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With no --until a deadline after the last event time does not fire."""
        feed = _feed(tmp_path, _discharge("RX1", "20260212110000", "M1", NHS_A))
        _, alerts, _ = _simulate(capsys, str(feed), "--config", str(REGION))
        assert alerts == []

    @pytest.mark.parametrize(
        ("until", "fires"),
        [
            ("2026-06-13T10:59", False),  # Europe/London: 09:59 UTC
            ("2026-06-13T11:00", True),  # exactly the deadline, 10:00 UTC
            ("2026-06-13T10:30:00+00:00", True),
        ],
    )
    def test_until_without_offset_is_london_time_and_inclusive(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], until: str, fires: bool
    ) -> None:
        """--until without an offset is Europe/London; a deadline exactly at it fires."""
        feed = _feed(tmp_path, _discharge("RX1", "20260612110000", "M1", NHS_A))
        _, alerts, _ = _simulate(capsys, str(feed), "--config", str(REGION), "--until", until)
        assert [a["raised_at"] for a in alerts] == (["2026-06-13T10:00:00+00:00"] if fires else [])


class TestMerges:
    def test_retired_identifier_state_and_later_events_go_to_the_survivor(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """After an A40 the local record's pathway is the survivor's, and so are later events."""
        feed = _feed(
            tmp_path,
            _referral("20260216110000", "M1", LOCAL),
            _merge("20260217110000", "M2", NHS_A, LOCAL),
            _booking("20260218110000", "M3", LOCAL, "20260225110000"),
        )
        _, alerts, _ = _simulate(
            capsys, str(feed), "--config", str(REGION), "--until", "2026-03-31T00:00Z"
        )
        assert [(a["rule"], a["patient"]) for a in alerts] == [
            ("identity-unverified", "RX1:MRN0999"),
            ("identity-unverified", "9434797373"),
            ("cancer-referral-not-seen", "9434797373"),
            ("faster-diagnosis-at-risk", "9434797373"),
            ("faster-diagnosis-breach", "9434797373"),
        ]


class TestLookBackByEventTime:
    def test_booking_sent_seconds_before_the_registration_it_follows_does_not_hide_it(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An SIU^S12 stamped (MSH-7) after the provider's A01 (EVN-6) but read first leaves
        repeated-history raised, exactly as when the two are read in event-time order."""
        hospice = _admit("HSP01", "20260216153300", "M1", NHS_A)
        booking = _booking("20260223133028", "M2", NHS_A, "20260301090000")
        admission = _admit("RX1", "20260223133000", "M3", NHS_A)
        runs = []
        for name, order in (
            ("early.hl7", (booking, admission)),
            ("ordered.hl7", (admission, booking)),
        ):
            feed = _feed(tmp_path, hospice, *order, name=name)
            _, alerts, _ = _simulate(capsys, str(feed), "--config", str(REGION))
            runs.append([a for a in alerts if a["rule"] == "repeated-history"])
        early, ordered = runs
        assert [(a["recipients"], a["evidence"]) for a in early] == [(["RX1"], ["M3"])]
        assert early == ordered


class TestReplay:
    def test_the_same_feed_twice_raises_each_alert_once(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Reprocessing the same messages in one run raises nothing new."""
        feed = str(EXAMPLES / "E4-death-pending-appointment.hl7")
        _, once, _ = _simulate(capsys, feed, "--config", str(REGION))
        _, twice, _ = _simulate(capsys, feed, feed, "--config", str(REGION))
        assert twice == once


class TestErrors:
    def test_unusable_messages_are_reported_without_patient_data(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Bad messages go to stderr by file and position with a reason; the run goes on."""
        unsupported = _msg("RX1", "20260212110000", "ADT^A99^ADT_A01", "M2", [_pid(NHS_A)])
        no_control_id = _msg("RX1", "20260212110000", "ADT^A01^ADT_A01", "", [_pid(NHS_A)])
        feed = _feed(
            tmp_path,
            _discharge("RX1", "20260212110000", "M1", NHS_A),
            unsupported,
            no_control_id,
            _admit("RX1", "20260215090000", "M4", NHS_B),
        )
        status, alerts, err = _simulate(capsys, str(feed), "--config", str(REGION))
        assert status == 0
        assert [a["rule"] for a in alerts] == ["hospice-handoff-missed"]
        lines = err.splitlines()
        assert lines[0].startswith(f"{feed}:2: unsupported-message-type (control id M2): ")
        assert lines[1].startswith(f"{feed}:3: missing-required-field: ")
        assert lines[-1] == "4 messages: 2 events, 2 rejected, 1 alerts"
        for secret in ("9434797373", "TESTER", "HIGH ST", "19450312"):
            assert secret not in err

    def test_unreadable_feed_exits_2_and_the_others_run(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A feed that cannot be read gives exit status 2; readable feeds are still simulated."""
        feed = EXAMPLES / "E1-hospice-handoff-missed.hl7"
        status, alerts, err = _simulate(
            capsys,
            str(tmp_path / "missing.hl7"),
            str(feed),
            "--config",
            str(REGION),
            "--until",
            "2026-02-15T09:00:00+00:00",
        )
        assert status == 2
        assert "cannot read" in err
        assert [a["rule"] for a in alerts] == ["hospice-handoff-missed"]

    def test_unreadable_region_config_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A missing region config is exit status 2 with a message naming it."""
        feed = str(EXAMPLES / "E1-hospice-handoff-missed.hl7")
        status, alerts, err = _simulate(capsys, feed, "--config", str(tmp_path / "none.yaml"))
        assert status == 2
        assert alerts == []
        assert "region config" in err

    def test_invalid_region_config_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A region config with a bad provider kind is exit status 2 naming the key."""
        region = tmp_path / "region.yaml"
        region.write_text("providers:\n  RX1: {kind: castle}\n", encoding="utf-8")
        feed = str(EXAMPLES / "E1-hospice-handoff-missed.hl7")
        status, _, err = _simulate(capsys, feed, "--config", str(region))
        assert status == 2
        assert "providers.RX1.kind" in err

    @pytest.mark.parametrize(
        "args",
        [
            ["--config", str(REGION), "--until", "next tuesday"],
            ["--until", "2026-02-15T09:00:00+00:00"],
        ],
    )
    def test_usage_errors_exit_2(self, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        """A bad --until or a missing --config is a usage error, exit status 2."""
        with pytest.raises(SystemExit) as exit_info:
            main(["simulate", str(EXAMPLE_FEEDS[0]), *args])
        assert exit_info.value.code == 2
        capsys.readouterr()


class TestFeedRun:
    def test_library_use_collects_alerts_and_rejections(self) -> None:
        """FeedRun can be driven without the CLI, with callbacks for alerts and rejections."""
        alerts: list[Alert] = []
        rejections: list[Rejection] = []
        run = FeedRun(
            region=load_region(REGION),
            received_time=datetime(2026, 1, 1, tzinfo=UTC),
            on_alert=alerts.append,
            on_rejection=rejections.append,
        )
        data = (EXAMPLES / "E3-faster-diagnosis.hl7").read_bytes()
        simulation = run.run([("E3", data), ("junk", b"not hl7 at all")])
        assert [a.rule for a in alerts] == []
        assert [a.rule for a in simulation.finish(datetime(2026, 3, 31, tzinfo=UTC))] == [
            "faster-diagnosis-at-risk",
            "faster-diagnosis-breach",
        ]
        assert [(r.feed, r.position, r.reason) for r in rejections] == [("junk", 1, "unparseable")]
        assert run.stats.messages == 4
        assert run.stats.patients == 1


class TestBenchFeedOutput:
    """The benchmark's synthetic feed pins the whole alert output, not just the examples.

    The expected values were produced by the engine before its speed-up (commit
    7b3581f) from the first :data:`BENCH_MESSAGES` messages of
    ``benchmarks.bench_simulate.messages``, which is deterministic; with the clock
    moved past every pathway deadline, all fourteen rules fire. A change to the
    engine or the rules that changes any alert byte changes the digest.
    """

    BENCH_MESSAGES = 12_000
    UNTIL = datetime(2026, 3, 1, tzinfo=UTC)
    EXPECTED_RULES = {
        "activity-after-death": 408,
        "cancer-referral-not-booked": 100,
        "cancer-referral-not-seen": 100,
        "death-notified": 375,
        "death-pending-appointments": 375,
        "eol-admission": 751,
        "eol-discharge": 738,
        "faster-diagnosis-at-risk": 302,
        "faster-diagnosis-breach": 302,
        "hospice-handoff-missed": 187,
        "identity-unverified": 375,
        "repeated-emergency-admissions": 188,
        "repeated-history": 2641,
        "repeated-test": 407,
    }
    #: SHA-256 of the alert JSON lines, each ended by a newline, in the order raised
    EXPECTED_SHA256 = "0ab87dc35591afc11fd4da0c8469bc164d54880597d6b1c1005461fbadbb9b7d"

    def test_bench_feed_gives_the_same_alerts_as_before_the_speed_up(self) -> None:
        """The bench feed's alerts, per rule and byte for byte, are those of the old engine."""
        lines: list[str] = []
        run = FeedRun(
            region=parse_region(bench_simulate.REGION),
            received_time=bench_simulate.RECEIVED,
            on_alert=lambda alert: lines.append(alert.to_json() + "\n"),
        )
        data = b"".join(bench_simulate.messages(self.BENCH_MESSAGES))
        run.run([("bench", data)], until=self.UNTIL)
        assert run.stats.rejected == 0
        assert Counter(json.loads(line)["rule"] for line in lines) == self.EXPECTED_RULES
        assert hashlib.sha256("".join(lines).encode()).hexdigest() == self.EXPECTED_SHA256
