"""Parse time of worst-case frames, against ``str.split`` of the same bytes.

Hostile or broken peers send frames built to be slow to parse. Each shape here is
such a frame, at 0.25, 0.5 and 1 MiB (the default ``mllp.max_frame_bytes``):

- ``short-lines``: an MSH, then one-byte lines separated by CR: every line a
  continuation of the segment before (raw line breaks in report text);
- ``short-lines-lf``: the same with LF line ends;
- ``short-segments``: an MSH, then segments of four bytes (``ZZ1|``);
- ``many-fields``: one segment of field separators only;
- ``many-components``: one field of components, each with sub-components;
- ``many-repetitions``: one OBX-5 of two-component repetitions (read by the translator's
  :func:`~connectors.translate.results.observation_value`);
- ``many-escapes``: one field of escape sequences (``\\F\\``, ``\\X41\\``, ``\\.br\\``).

Timed, for each: ``parse_message`` (bytes in, decoding included) and then reading every
field of every segment with :meth:`Segment.all_components` (every repetition and
component split, every escape resolved), plus ``observation_value`` for the OBX. The
baseline, measured in the same run on the same bytes, is the least any parser must do:
decode them and ``str.split`` the text on CR and on the field separator. The ratio
(parse time / baseline time) stays flat from 0.25 to 1 MiB when parsing is linear;
quadratic work would double it with each doubling of the size.

Run with ``python -m benchmarks parse``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from connectors.hl7 import parse_message
from connectors.translate.results import observation_value

SIZES = (256 * 1024, 512 * 1024, 1024 * 1024)
ROUNDS = 5
BASELINE_ROUNDS = 7
MSH = b"MSH|^~\\&|LAB|RXA01|CAREBUS|REGION|20260301093000||ORU^R01^ORU_R01|C1|P|2.5.1\r"
OBX = b"OBX|1|TX|CODE^TEXT^L||"


def _fill(unit: bytes, size: int, head: bytes) -> bytes:
    return head + unit * ((size - len(head)) // len(unit))


SHAPES: dict[str, Callable[[int], bytes]] = {
    "short-lines": lambda n: _fill(b"a\r", n, MSH + OBX + b"x\r"),
    "short-lines-lf": lambda n: _fill(b"a\n", n, MSH + OBX + b"x\n"),
    "short-segments": lambda n: _fill(b"ZZ1|\r", n, MSH),
    "many-fields": lambda n: _fill(b"|", n, MSH + OBX),
    "many-components": lambda n: _fill(b"a&b^", n, MSH + OBX),
    "many-repetitions": lambda n: _fill(b"a^b~", n, MSH + OBX),
    "many-escapes": lambda n: _fill(b"\\F\\\\X41\\\\.br\\", n, MSH + OBX),
}


def parse_and_read(data: bytes) -> int:
    """Parse ``data`` and read every value of it; the number of values read."""
    message = parse_message(data)
    values = 0
    for segment in message.segments:
        for field in range(1, segment.field_count + 1):
            for components in segment.all_components(field):
                values += len(components)
        if segment.name == "OBX":
            observation_value(segment)
    return values


def split_baseline(data: bytes) -> int:
    """Decode ``data`` and split it on CR and on ``|``: the least a parser does."""
    text = data.decode("utf-8")
    return len(text.split("\r")) + len(text.split("|"))


def best_of(rounds: int, work: Callable[[bytes], int], data: bytes) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        work(data)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    from carebus.compiled import is_compiled

    compiled = is_compiled("connectors.hl7.parse")
    print(f"connectors.hl7 {'compiled' if compiled else 'interpreted'}; best of {ROUNDS} runs")
    print(f"{'shape':<18} {'size':>8} {'parse+read ms':>14} {'str.split ms':>13} {'ratio':>7}")
    for name, build in SHAPES.items():
        for size in SIZES:
            data = build(size)
            parse_s = best_of(ROUNDS, parse_and_read, data)
            split_s = best_of(BASELINE_ROUNDS, split_baseline, data)
            print(
                f"{name:<18} {size / 1048576:>6.2f}Mi {parse_s * 1000:>14.1f} "
                f"{split_s * 1000:>13.2f} {parse_s / split_s:>6.0f}x",
                flush=True,
            )
