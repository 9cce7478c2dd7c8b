"""Tests for carebus/commands/generate.py: ``carebus generate``."""

from __future__ import annotations

from pathlib import Path

import pytest

from carebus.cli import main
from connectors.hl7 import iter_feed, parse_message
from streams.region import load_region


def _generate(tmp_path: Path, *args: str, name: str = "feed.hl7") -> Path:
    out = tmp_path / name
    assert main(["generate", "--out", str(out), *args]) == 0
    return out


class TestGenerate:
    def test_writes_mllp_frames_by_default(self, tmp_path: Path) -> None:
        """The default format is one MLLP frame per message."""
        data = _generate(tmp_path, "--messages", "25").read_bytes()
        assert data.startswith(b"\x0bMSH|")
        assert data.count(b"\x0b") == data.count(b"\x1c\r") == 25
        assert len(list(iter_feed(data))) == 25

    def test_plain_format_reads_back_message_by_message(self, tmp_path: Path) -> None:
        """Plain output has CR-terminated segments and splits into the same messages."""
        plain = _generate(tmp_path, "--messages", "40", "--format", "plain").read_bytes()
        mllp = _generate(tmp_path, "--messages", "40", name="framed.hl7").read_bytes()
        assert b"\x0b" not in plain
        assert b"\n" not in plain
        assert [i.raw for i in iter_feed(plain)] == [i.raw for i in iter_feed(mllp)]

    def test_same_arguments_same_bytes(self, tmp_path: Path) -> None:
        """The command is reproducible; another seed gives another feed."""
        first = _generate(tmp_path, "--seed", "9", "--patients", "20", name="a").read_bytes()
        second = _generate(tmp_path, "--seed", "9", "--patients", "20", name="b").read_bytes()
        other = _generate(tmp_path, "--seed", "10", "--patients", "20", name="c").read_bytes()
        assert first == second != other

    def test_start_without_offset_is_london_time(self, tmp_path: Path) -> None:
        """A --start without offset is Europe/London: messages begin on that day."""
        data = _generate(tmp_path, "--messages", "1", "--start", "2026-07-01T08:00").read_bytes()
        message = parse_message(next(iter_feed(data)).raw)
        msh = message.first("MSH")
        assert msh is not None
        assert msh.get(7).startswith("20260701")

    def test_region_out_writes_a_loadable_region(self, tmp_path: Path) -> None:
        """--region-out writes the region config that the rules load."""
        region = tmp_path / "region.yaml"
        _generate(tmp_path, "--messages", "1", "--region-out", str(region))
        assert len(load_region(region).providers) >= 18

    def test_writes_to_standard_output(self, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
        """--out - (the default) writes the feed to standard output."""
        assert main(["generate", "--messages", "3", "--format", "plain"]) == 0
        captured = capfdbinary.readouterr()
        assert len(list(iter_feed(captured.out))) == 3
        assert b"wrote 3 messages" in captured.err

    @pytest.mark.parametrize(
        "args",
        [["--start", "yesterday"], ["--arrivals-per-day", "0"], ["--out", "/nonexistent/dir/f"]],
    )
    def test_bad_arguments_exit_2(self, args: list[str], tmp_path: Path) -> None:
        """An unusable start, rate or output path is a usage error."""
        assert main(["generate", "--messages", "1", *args]) == 2

    def test_patients_and_messages_exclude_each_other(self) -> None:
        """--patients and --messages cannot both be given."""
        with pytest.raises(SystemExit):
            main(["generate", "--patients", "2", "--messages", "2"])
