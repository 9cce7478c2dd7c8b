"""Hypothesis strategies for HL7 input: real messages, damaged and given junk MSH-18 values.

Shared by the parser and framing fuzz tests and the pipeline's property test. Seeds
are the smaller files of the shared corpus and the test fixtures (fictional patients).
"""

from __future__ import annotations

from hypothesis import strategies as st

from tests.connectors.hl7.samples import ADT_A01_251, CORPUS

#: Real messages to damage: the smaller corpus files (quick to exercise fully).
SEEDS = [
    ADT_A01_251.encode(),
    *(data for p in sorted(CORPUS.glob("*.hl7")) if len(data := p.read_bytes()) < 2000),
]
DELIMS = "|^~\\&#$*!@%\r\n"

#: MSH-18 values that name no usable character set: Python codecs that cannot carry
#: HL7 (they must be rejected), unknown and non-text names (ignored), and empties.
JUNK_CHARSETS = [
    "UNDEFINED",
    "undefined",
    "CP037",
    "cp500",
    "UTF-7",
    "HZ",
    "PUNYCODE",
    "IDNA",
    "UNICODE_ESCAPE",
    "SHIFT_JIS_2004",
    "rot13",
    "base64",
    "zlib",
    "UTF-16",
    "UTF-32",
    "KLINGON",
    "8859/99",
    "UTF\x008",
    "",
    " ",
]


def damage(data: bytes, draw: st.DrawFn) -> bytes:
    """``data`` with 1 to 8 bytes replaced, inserted or deleted."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(out)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.one_of(st.sampled_from(DELIMS.encode()), st.integers(0, 255)))
        if op == "insert" or pos == len(out):
            out.insert(pos, byte)
        elif op == "replace":
            out[pos] = byte
        else:
            del out[pos]
    return bytes(out)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes] | None = None) -> bytes:
    """A real message with some bytes replaced, inserted or deleted."""
    return damage(draw(st.sampled_from(seeds or SEEDS)), draw)


def with_msh18(data: bytes, value: bytes) -> bytes:
    """``data`` with MSH-18 set to ``value`` (fields added up to it when missing)."""
    end = len(data)
    for terminator in (b"\r", b"\n"):
        found = data.find(terminator)
        if 0 <= found < end:
            end = found
    fs = data[3:4] or b"|"
    fields = data[:end].split(fs)
    fields += [b""] * (18 - len(fields))
    fields[17] = value
    return fs.join(fields) + data[end:]


@st.composite
def junk_charset(draw: st.DrawFn, seeds: list[bytes] | None = None) -> bytes:
    """A real message whose MSH-18 is a junk character set name, maybe with non-ASCII
    bytes (Latin-1 or UTF-8) added and maybe damaged as well."""
    data = draw(st.sampled_from(seeds or SEEDS))
    name = draw(st.one_of(st.sampled_from(JUNK_CHARSETS), st.text(max_size=12)))
    data = with_msh18(data, name.encode("utf-8"))
    if draw(st.booleans()):
        extra = draw(st.sampled_from(["É".encode(), "É".encode("latin-1"), b"\\X41\\", b"\xff"]))
        pos = draw(st.integers(data.find(b"\r") + 1 if b"\r" in data else 0, len(data)))
        data = data[:pos] + extra + data[pos:]
    if draw(st.booleans()):
        data = damage(data, draw)
    return data


def hostile() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, ``MSH`` plus arbitrary bytes, damaged messages, junk MSH-18."""
    return st.one_of(
        st.binary(max_size=400),
        st.binary(max_size=300).map(lambda tail: b"MSH" + tail),
        mutated(),
        junk_charset(),
    )
