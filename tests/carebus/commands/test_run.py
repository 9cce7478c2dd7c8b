"""Tests for carebus/commands/run.py: ``carebus run``'s arguments and what it prints."""

from __future__ import annotations

import io
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carebus.cli import build_parser
from carebus.commands.run import (
    DEFAULT_PATIENTS,
    DEFAULT_RATE,
    Console,
    SafeStream,
    alert_line,
    feed_bar,
    key_digest,
)
from carebus.replay import ReplaySummary

NHS_LIKE = re.compile(r"\d{3}[ -]?\d{3}[ -]?\d{4}")


def alert(**changes: Any) -> dict[str, Any]:
    """A decoded ``carebus.alerts.Alert`` record, as ``schemas.codec.decode`` returns it."""
    record: dict[str, Any] = {
        "rule": "hospice-handoff-missed",
        "patient": "9434765919",
        "raised_at": datetime(2026, 3, 2, 14, 5, tzinfo=UTC),
        "recipients": ["HSP01", "RJE"],
        "dedup_key": "hospice-handoff-missed:9434765919:MSG000123",
        "evidence": ["MSG000123"],
        "summary": "Discharged to hospice 24 h ago; no hospice admission received",
    }
    record.update(changes)
    return record


class TtyIO(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestArguments:
    def test_defaults(self) -> None:
        """Without options the feed has the default patients and rate, and a fresh seed."""
        args = build_parser().parse_args(["run"])
        assert (args.patients, args.rate, args.seed, args.no_feed) == (
            DEFAULT_PATIENTS,
            DEFAULT_RATE,
            None,
            False,
        )

    def test_options(self) -> None:
        """--patients, --rate, --seed and --no-feed are read as given."""
        args = build_parser().parse_args(
            ["run", "--patients", "20", "--rate", "200", "--seed", "7", "--no-feed"]
        )
        assert (args.patients, args.rate, args.seed, args.no_feed) == (20, 200.0, 7, True)

    @pytest.mark.parametrize(
        "argv",
        [
            ["--patients", "0"],
            ["--patients", "many"],
            ["--rate", "0"],
            ["--rate", "-5"],
            ["--rate", "fast"],
            ["--seed", "x"],
        ],
    )
    def test_bad_values_are_usage_errors(
        self, argv: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A count or rate that is not positive is refused before anything starts."""
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(["run", *argv])
        assert exc.value.code == 2
        assert "carebus run: error" in capsys.readouterr().err


class TestAlertLine:
    def test_rule_recipients_time_and_key_digest(self) -> None:
        """The line names the rule, recipients, UTC time and a digest of the dedup key."""
        record = alert()
        assert alert_line(record) == (
            "alert hospice-handoff-missed -> HSP01,RJE raised 2026-03-02 14:05Z "
            f"key {key_digest(record['dedup_key'])}: "
            "Discharged to hospice 24 h ago; no hospice admission received"
        )

    def test_no_patient_data(self) -> None:
        """Neither the patient key nor the dedup key (which holds it) is printed."""
        line = alert_line(alert())
        assert "9434765919" not in line
        assert "MSG000123" not in line
        assert not NHS_LIKE.search(line)

    def test_identifiers_in_a_summary_are_masked(self) -> None:
        """A summary that names the patient or holds NHS-number digits is masked."""
        line = alert_line(
            alert(
                patient="XRB:X24779396",
                summary="Check XRB:X24779396 and 943 476 5919 and 9434765919 today",
            )
        )
        assert "X24779396" not in line
        assert not NHS_LIKE.search(line)
        assert line.endswith(": Check *** and *** and *** today")

    def test_time_is_shown_in_utc(self) -> None:
        """A raised_at in another offset is printed in UTC."""
        local = datetime(2026, 7, 1, 9, 30, tzinfo=timezone(timedelta(hours=1)))
        assert " raised 2026-07-01 08:30Z " in alert_line(alert(raised_at=local))

    def test_without_a_summary_the_line_ends_at_the_key(self) -> None:
        """An empty summary adds nothing after the key."""
        line = alert_line(alert(summary=""))
        assert line.endswith(f"key {key_digest(alert()['dedup_key'])}")

    def test_digest_is_stable_and_distinguishes_keys(self) -> None:
        """The same dedup key always gives the same digest; other keys give others."""
        assert key_digest("a:1:X") == key_digest("a:1:X")
        assert key_digest("a:1:X") != key_digest("a:2:X")
        assert re.fullmatch(r"[bcdfghjkmnpqrstv]{12}", key_digest("a:1:X"))

    @given(st.text(min_size=1, max_size=60))
    def test_a_digest_never_looks_like_an_nhs_number(self, dedup_key: str) -> None:
        """No digest holds a run of digits, so no alert line reads as naming a patient."""
        assert not any(ch.isdigit() for ch in key_digest(dedup_key))


def summary(sent: int, progress: int, elapsed: float = 2.0) -> ReplaySummary:
    result = ReplaySummary(sent=sent, aa=sent, progress=progress, elapsed_s=elapsed)
    result.latency.add(0.010)
    return result


class TestFeedBar:
    def test_bar_with_a_known_total(self) -> None:
        """With the total known the bar shows the fraction sent, counts and rate."""
        bar = feed_bar(summary(50, 180), 200, width=8)
        assert bar.startswith("feed [##------]  25% 50 sent, AA 50")
        assert bar.endswith("25 msg/s")

    def test_counts_only_while_the_total_is_unknown(self) -> None:
        """Before the feed is counted only the counts are shown."""
        assert feed_bar(summary(10, 10), None).startswith("feed 10 sent, AA 10")


class TestConsole:
    def test_lines_to_out_progress_lines_to_err_off_a_terminal(self) -> None:
        """Off a terminal, lines go to standard output and progress is a line on stderr."""
        out, err = io.StringIO(), io.StringIO()
        console = Console(out, err)
        console.feed_total(100)
        console.say("hello")
        console.progress(summary(10, 10))
        console.alert(alert())
        assert out.getvalue().splitlines()[0] == "hello"
        assert out.getvalue().splitlines()[1].startswith("alert hospice-handoff-missed ")
        assert err.getvalue().startswith("feed [")
        assert "\r" not in err.getvalue()
        assert console.interval_s == 5.0

    def test_lines_clear_and_redraw_the_bar_on_a_terminal(self) -> None:
        """On a terminal a line printed mid-feed clears the bar, then it is drawn again."""
        out, err = io.StringIO(), TtyIO()
        console = Console(out, err)
        console.progress(summary(10, 10))
        drawn = err.getvalue()
        console.alert(alert())
        assert drawn.startswith("\rfeed 10 sent")
        assert err.getvalue() == drawn + "\r\x1b[K" + drawn
        assert out.getvalue().startswith("alert ")

    def test_feed_done_ends_the_bar_and_prints_the_summary(self) -> None:
        """When the feed ends the bar's line is finished and a summary line printed."""
        out, err = io.StringIO(), TtyIO()
        console = Console(out, err)
        console.feed_total(20)
        console.progress(summary(10, 10))
        console.feed_done(summary(20, 20))
        assert err.getvalue().endswith("\n")
        assert "100%" in err.getvalue()
        assert out.getvalue().startswith("feed sent: 20 sent, AA 20, AE 0, AR 0, no ACK 0;")
        console.say("after")
        assert out.getvalue().endswith("after\n")
        assert err.getvalue().endswith("\n")

    def test_an_aborted_feed_is_a_warning(self) -> None:
        """A feed that stopped early says why on standard error."""
        out, err = io.StringIO(), io.StringIO()
        stopped = summary(3, 3)
        stopped.aborted = "cannot connect to 127.0.0.1:2575: Connection refused"
        Console(out, err).feed_done(stopped)
        assert "carebus run: the feed stopped early: cannot connect" in err.getvalue()


class TestOutputThatCannotBeWritten:
    def test_a_pipe_whose_reader_is_gone_is_dropped_and_sent_to_dev_null(self) -> None:
        """Writing to a pipe nobody reads raises nothing; the descriptor then goes to /dev/null."""
        read_end, write_end = os.pipe()
        os.close(read_end)
        stream = os.fdopen(write_end, "w")
        try:
            safe = SafeStream(stream)
            console = Console(safe, safe)
            console.say("stopping ...")  # EPIPE (SIGPIPE is ignored by Python)
            assert safe.broken
            assert os.readlink(f"/proc/self/fd/{write_end}") == os.devnull
            console.warn("the broker did not stop")
            console.feed_done(summary(3, 3))
            print("at exit", file=stream, flush=True)  # other writers no longer fail either
        finally:
            stream.close()

    def test_a_closed_stream_is_dropped(self) -> None:
        """A closed stream (ValueError on write) is treated as broken, not raised."""
        out, err = io.StringIO(), io.StringIO()
        console = Console(out, err)
        out.close()
        err.close()
        console.say("a line")
        console.progress(summary(1, 1))
        console.warn("a warning")
        assert isinstance(console.out, SafeStream) and console.out.broken
        assert isinstance(console.err, SafeStream) and console.err.broken

    def test_a_working_stream_is_written_through(self) -> None:
        """Until a write fails, everything reaches the stream under it."""
        out = io.StringIO()
        safe = SafeStream(out)
        print("one", file=safe, flush=True)
        assert out.getvalue() == "one\n" and not safe.broken
        assert not safe.isatty()
        assert SafeStream(TtyIO()).isatty()


class TestStopArguments:
    def test_stop_and_the_warden_s_hidden_options(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--stop is an option; --lifeline FD and --run-dir are read but not shown in --help."""
        parser = build_parser()
        args = parser.parse_args(["run", "--stop", "--lifeline", "7", "--run-dir", "x"])
        assert (args.stop, args.lifeline, str(args.run_dir)) == (True, 7, "x")
        assert not parser.parse_args(["run"]).stop
        with pytest.raises(SystemExit):
            parser.parse_args(["run", "--help"])
        run_help = capsys.readouterr().out
        assert "--stop" in run_help
        assert "--lifeline" not in run_help and "--run-dir" not in run_help
