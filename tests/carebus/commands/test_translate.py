"""Tests for carebus/commands/translate.py: ``carebus translate FEED...``."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from carebus.commands import translate
from carebus.settings import Settings
from connectors.hl7 import frame, iter_feed

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = REPO_ROOT.parent / "shared" / "spec" / "examples"

A08 = (
    "MSH|^~\\&|EPR|RX1|CAREBUS|G0001|20260209090000||ADT^A08|MSG1|P|2.4\r"
    "EVN|A08|20260209090000\r"
    "PID|1||9434765919^^^NHS^NH~MRN0101^^^RX1^MR||TESTER^PAT||19450312|F\r"
)
A06 = A08.replace("ADT^A08|MSG1", "ADT^A06|MSG2")
NO_CONTROL_ID = A08.replace("|MSG1|", "||")


def _run(
    capsys: pytest.CaptureFixture[str], *feeds: str | Path
) -> tuple[int, list[str], list[str]]:
    parser = argparse.ArgumentParser()
    translate.add_arguments(parser)
    args = parser.parse_args([str(f) for f in feeds])
    status = translate.run(args, Settings())
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


def _feed(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


class TestRun:
    def test_one_json_line_per_event_and_a_summary(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Events go to stdout as {"schema", "record"} lines; stderr ends with the summary."""
        dead = A08.replace("MSG1", "MSG3").replace("|F\r", "|F" + "|" * 22 + "Y\r")
        feed = _feed(tmp_path, "a.hl7", A08 + dead)
        status, out, err = _run(capsys, feed)
        assert status == 0
        lines = [json.loads(line) for line in out]
        assert [line["schema"] for line in lines] == [
            "carebus.events.PatientDemographics",
            "carebus.events.PatientDemographics",
            "carebus.events.PatientDied",
        ]
        header = lines[0]["record"]["header"]
        assert header["control_id"] == "MSG1"
        assert header["event_time"] == "2026-02-09T09:00:00+00:00"
        assert lines[0]["record"]["patient"]["key"] == "9434765919"
        assert err == ["2 messages: 3 events, 0 rejected"]

    def test_every_event_of_a_run_has_the_same_received_time(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The clock is read once per run: all events share one received time."""
        feed = _feed(tmp_path, "a.hl7", A08 * 3)
        _, out, _ = _run(capsys, feed, feed)
        times = {json.loads(line)["record"]["header"]["received_time"] for line in out}
        assert len(out) == 6
        assert len(times) == 1

    def test_rejections_name_file_position_control_id_and_reason(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each rejection is FILE:POSITION: REASON (control id ID): DETAIL, without patient data."""
        feed = _feed(tmp_path, "mixed.hl7", "junk\r" + A08 + A06 + NO_CONTROL_ID)
        status, out, err = _run(capsys, feed)
        assert status == translate.EXIT_UNPARSEABLE  # the junk; the other rejections do not count
        assert len(out) == 1
        assert err[0].startswith(f"{feed}:1: unparseable: ")
        assert err[1] == (
            f"{feed}:3: unsupported-message-type (control id MSG2): ADT^A06 is not translated"
        )
        assert err[2] == f"{feed}:4: missing-required-field: MSH-10 (message control id) is empty"
        assert err[-1] == "4 messages: 1 events, 3 rejected"
        assert all("9434765919" not in line and "TESTER" not in line for line in err)

    def test_untranslated_messages_alone_exit_0(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Rejections for content (an untranslated type, a missing field) keep exit status 0."""
        status, _, err = _run(capsys, _feed(tmp_path, "a.hl7", A08 + A06 + NO_CONTROL_ID))
        assert status == 0
        assert err[-1] == "3 messages: 1 events, 2 rejected"

    @pytest.mark.parametrize("msh18", ["UNDEFINED", "cp037", "UTF-7"])
    def test_unusable_msh18_is_one_line_and_exit_1(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], msh18: str
    ) -> None:
        """A message whose MSH-18 names an unusable character set is one unparseable line,
        naming MSH-18 but not its value; the other messages are still translated; exit 1."""
        bad = A08.replace("|P|2.4\r", f"|P|2.4||||||{msh18}\r").replace("TESTER", "T\xc9STER")
        data = A08.encode() + bad.encode("latin-1") + A08.replace("MSG1", "MSG4").encode()
        status, out, err = _run(capsys, _feed(tmp_path, "a.hl7", data))
        assert status == translate.EXIT_UNPARSEABLE
        assert len(out) == 2
        assert err[0] == (
            f"{tmp_path / 'a.hl7'}:2: unparseable (control id MSG1): "
            "MSH-18 names a character set that cannot carry HL7"
        )
        assert err[-1] == "3 messages: 2 events, 1 rejected"
        assert msh18 not in err[0]

    def test_a_failing_parser_or_translator_is_a_rejection_line(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An unexpected exception while parsing or translating is reported as one line, no
        traceback: unparseable (exit 1) or translation-failed."""
        import connectors.hl7
        import connectors.translate

        real_parse = connectors.hl7.parse_message

        def parse(raw: bytes, **kwargs: str) -> object:
            if b"MSG2" in raw:
                raise UnicodeError("boom")
            return real_parse(raw, **kwargs)

        def translate_(message: object, **kwargs: object) -> object:
            raise KeyError("defect")

        monkeypatch.setattr(connectors.hl7, "parse_message", parse)
        monkeypatch.setattr(connectors.translate, "translate", translate_)
        feed = _feed(tmp_path, "a.hl7", A08 + A08.replace("MSG1", "MSG2"))
        status, out, err = _run(capsys, feed)
        assert status == translate.EXIT_UNPARSEABLE
        assert out == []
        assert err == [
            f"{feed}:1: translation-failed (control id MSG1): "
            "message could not be translated (KeyError)",
            f"{feed}:2: unparseable: message could not be read (UnicodeError)",
            "2 messages: 0 events, 2 rejected",
        ]

    def test_unreadable_feed_exits_2_but_translates_the_others(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A feed that cannot be read is reported, the others are translated, exit status is 2."""
        good = _feed(tmp_path, "good.hl7", A08)
        status, out, err = _run(capsys, tmp_path / "missing.hl7", good)
        assert status == 2
        assert len(out) == 1
        assert err[0].startswith(f"carebus translate: cannot read {tmp_path / 'missing.hl7'}")
        assert err[-1] == "1 messages: 1 events, 0 rejected"

    def test_mllp_and_batch_feeds(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """MLLP-framed and FHS/BHS batch feeds are split into their messages."""
        mllp = _feed(tmp_path, "f.mllp", frame(A08.encode()) + frame(A06.encode()))
        batch = _feed(
            tmp_path, "b.hl7", "FHS|^~\\&|EPR|RX1\rBHS|^~\\&|EPR|RX1\r" + A08 + "BTS|1\rFTS|1\r"
        )
        status, out, err = _run(capsys, mllp, batch)
        assert status == 0
        assert len(out) == 2
        assert err[0].startswith(f"{mllp}:2: unsupported-message-type")
        assert err[-1] == "3 messages: 2 events, 1 rejected"

    def test_dash_reads_standard_input(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A FEED of - is read from standard input."""

        class Stdin:
            buffer = io.BytesIO(A08.encode())

        monkeypatch.setattr(sys, "stdin", Stdin)
        status, out, err = _run(capsys, "-")
        assert status == 0
        assert len(out) == 1
        assert err == ["1 messages: 1 events, 0 rejected"]

    def test_the_spec_examples_translate_without_rejections(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every message of the rules spec's worked examples translates."""
        feeds = sorted(EXAMPLES.glob("*.hl7"))
        assert len(feeds) == 4
        messages = sum(len(list(iter_feed(feed.read_bytes()))) for feed in feeds)
        status, out, err = _run(capsys, *feeds)
        assert status == 0
        assert messages > len(feeds)
        assert err == [f"{messages} messages: {len(out)} events, 0 rejected"]


class TestCommandLine:
    def _carebus(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "carebus", *args],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=60,
            check=False,
        )

    def test_through_carebus_main(self, tmp_path: Path) -> None:
        """`carebus translate FEED` works end to end and exits 0."""
        feed = _feed(tmp_path, "a.hl7", A08 + A06)
        result = self._carebus("translate", str(feed))
        assert result.returncode == 0, result.stderr
        assert (
            json.loads(result.stdout.splitlines()[0])["schema"]
            == "carebus.events.PatientDemographics"
        )
        assert result.stderr.splitlines()[-1] == "2 messages: 1 events, 1 rejected"

    def test_unusable_msh18_through_carebus_main(self, tmp_path: Path) -> None:
        """`carebus translate` on MSH-18 UNDEFINED: one line, exit status 1, no traceback."""
        bad = A08.replace("|P|2.4\r", "|P|2.4||||||UNDEFINED\r").replace("TESTER", "T\xc9STER")
        feed = _feed(tmp_path, "a.hl7", bad.encode("latin-1"))
        result = self._carebus("translate", str(feed))
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert result.stderr.splitlines() == [
            f"{feed}:1: unparseable (control id MSG1): "
            "MSH-18 names a character set that cannot carry HL7",
            "1 messages: 0 events, 1 rejected",
        ]

    def test_no_feed_is_a_usage_error(self) -> None:
        """Without a FEED argument the command exits 2 with usage help."""
        result = self._carebus("translate")
        assert result.returncode == 2
        assert "usage:" in result.stderr
