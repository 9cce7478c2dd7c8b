"""HL7 v2 acknowledgements, built as pure functions (no I/O, no clock).

The listener reads the sender's MSH leniently with :func:`read_header` (this works
on garbage and on half a frame, so a NAK can name the control id whenever one is
readable), decides which acknowledgements the sender asked for with
:func:`ack_codes` (original mode, or enhanced mode from MSH-15/MSH-16), and renders
each with :func:`build_ack`.

The ACK reuses the sender's field separator, encoding characters, version,
processing id and character set (MSH-18), swaps sender and receiver, and echoes
MSH-10 in MSA-2. The header is read as ISO-8859-1, which maps bytes to characters
one to one, so echoed fields go back byte for byte in whatever ASCII-compatible
character set the sender used; text carebus adds itself is plain ASCII.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

AckCode = Literal["AA", "AE", "AR", "CA", "CE", "CR"]
#: How a message ended: stored (and acknowledged), retriable failure, or rejected.
Result = Literal["accepted", "error", "rejected"]

_DEFAULT_ENCODING = "^~\\&"
_DEFAULT_VERSION = "2.5.1"
_MAX_TEXT = 200
_START_BLOCK = b"\x0b"
_LEADING = b"\xef\xbb\xbf\x0b \t\r\n"
_LEADING_BYTES = {bytes([b]) for b in _LEADING}
_MAX_HEADER = 65536

#: HL7 table 0357 (message error condition codes) texts used in ERR.
ERROR_TEXTS = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "104": "Value too long",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}


class MshHeader(NamedTuple):
    """The MSH fields an acknowledgement needs, raw (still escaped) as sent."""

    field_separator: str = "|"
    encoding_characters: str = _DEFAULT_ENCODING
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_type: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = _DEFAULT_VERSION
    accept_ack_type: str = ""
    application_ack_type: str = ""
    character_set: str = ""

    @property
    def component_separator(self) -> str:
        """MSH-2 position 1 (``^``)."""
        return self.encoding_characters[0]

    @property
    def trigger_event(self) -> str:
        """MSH-9.2, raw."""
        parts = self.message_type.split(self.component_separator)
        return parts[1] if len(parts) > 1 else ""

    @property
    def enhanced_mode(self) -> bool:
        """True when MSH-15 or MSH-16 is valued (HL7 enhanced acknowledgement mode)."""
        return bool(self.accept_ack_type or self.application_ack_type)


@dataclass(frozen=True)
class AckError:
    """Why a message was not accepted: carried in MSA-3 and ERR, never exception text."""

    reason: str
    detail: str
    hl7_code: str = "207"
    #: Where the problem is, as ``SEG-n`` (``PID-3``), when known.
    location: str | None = None


def read_header(raw: bytes) -> MshHeader | None:
    """Read MSH leniently from the start of ``raw``; None when there is no MSH to read."""
    data = raw.lstrip(_LEADING) if raw[:1] in _LEADING_BYTES else raw
    if not data.startswith(b"MSH") or len(data) < 8:
        return None
    end = data.find(b"\r", 0, _MAX_HEADER)
    if end < 0:
        end = data.find(b"\n", 0, _MAX_HEADER)
    else:
        lf = data.find(b"\n", 0, end)
        end = lf if lf >= 0 else end
    text = data[: end if end >= 0 else _MAX_HEADER].decode("latin-1")
    sep = text[3]
    if sep.isalnum() or sep in "\r\n ":
        return None
    # MSH-1 is the separator itself, so MSH-n is f[n - 1].
    f = text.split(sep, 18)
    if len(f) < 18:
        f += [""] * (18 - len(f))
    encoding = f[1]
    if encoding not in _USUAL_ENCODINGS and not _valid_encoding(encoding, sep):
        encoding = (encoding + _DEFAULT_ENCODING[len(encoding) :])[:4]
        if not _valid_encoding(encoding, sep):
            encoding = _DEFAULT_ENCODING
    comp = encoding[0]
    return MshHeader(
        sep,
        encoding,
        f[2],
        f[3],
        f[4],
        f[5],
        f[8],
        f[9].split(comp, 1)[0],
        f[10] or "P",
        f[11] or _DEFAULT_VERSION,
        f[14].split(comp, 1)[0].upper(),
        f[15].split(comp, 1)[0].upper(),
        f[17].split(sep, 1)[0],
    )


_USUAL_ENCODINGS = frozenset({"^~\\&", "^~\\&#"})


def _valid_encoding(encoding: str, sep: str) -> bool:
    return (
        len(encoding) >= 4
        and len(set(encoding[:4])) == 4
        and sep not in encoding
        and not any(c.isalnum() or c in "\r\n" for c in encoding)
    )


def ack_codes(
    header: MshHeader | None, result: Result, *, reject_code: str = "AR"
) -> list[AckCode]:
    """The acknowledgements to send, in order, for a message that ended with ``result``.

    Original mode (MSH-15 and MSH-16 empty): one application ACK. Enhanced mode: an
    accept (commit) ACK when MSH-15 asks for it, then an application ACK when MSH-16
    asks for it; ``AL`` always, ``NE`` (or empty) never, ``ER`` on error only, ``SU``
    on success only. ``reject_code`` (``AR`` or ``AE``) answers rejected messages.
    """
    app: AckCode = "AA" if result == "accepted" else "AE" if result == "error" else "AR"
    if result == "rejected" and reject_code == "AE":
        app = "AE"
    if header is None or not header.enhanced_mode:
        return [app]
    commit: AckCode = {"accepted": "CA", "error": "CE", "rejected": "CR"}[result]  # type: ignore[assignment]
    codes: list[AckCode] = []
    if _wanted(header.accept_ack_type, success=result == "accepted"):
        codes.append(commit)
    if _wanted(header.application_ack_type, success=result == "accepted"):
        codes.append(app)
    return codes


def _wanted(condition: str, *, success: bool) -> bool:
    if condition in ("", "NE"):
        return False
    if condition == "ER":
        return not success
    if condition == "SU":
        return success
    return True  # AL, and anything unknown: answering is the safe side


def build_ack(
    header: MshHeader | None,
    code: AckCode,
    *,
    control_id: str,
    timestamp: datetime,
    error: AckError | None = None,
) -> bytes:
    """Render one acknowledgement (without MLLP framing) for ``header``.

    ``control_id`` is the ACK's own MSH-10; ``timestamp`` its MSH-7. A ``header`` of
    None (nothing readable) gives an ACK with default separators and an empty MSA-2.
    """
    h = header or _NO_HEADER
    sep = h.field_separator
    msh = [*_msh_prefix(h), _stamp(timestamp), "", _ack_type(h), _plain(control_id, h)]
    msh += [h.processing_id, h.version, "", "", "", "", "", h.character_set]
    segments = [_join(msh, sep)]
    msa = ["MSA", code, h.control_id]
    if error is not None:
        msa.append(_escape(_ascii(f"{error.reason}: {error.detail}")[:_MAX_TEXT], h))
    segments.append(sep.join(msa))
    if error is not None:
        segments.append(_err_segment(error, h))
    segments.append("")
    return "\r".join(segments).encode("latin-1")


def _msh_prefix(h: MshHeader) -> list[str]:
    """MSH-1 to MSH-6 of the ACK: sender and receiver swapped."""
    return [
        "MSH",
        h.encoding_characters,
        h.receiving_application,
        h.receiving_facility,
        h.sending_application,
        h.sending_facility,
    ]


def _ack_type(h: MshHeader) -> str:
    comp = h.encoding_characters[0]
    trigger = h.trigger_event
    if trigger and _version_tuple(h.version) >= (2, 3, 1):
        return f"ACK{comp}{trigger}{comp}ACK"
    return f"ACK{comp}{trigger}" if trigger else "ACK"


def _stamp(ts: datetime) -> str:
    """HL7 DTM to the second, with the offset when ``ts`` has one."""
    return _stamp_second(ts.replace(microsecond=0))


@functools.lru_cache(maxsize=8)
def _stamp_second(ts: datetime) -> str:
    return ts.strftime("%Y%m%d%H%M%S%z")


def _plain(text: str, h: MshHeader) -> str:
    """``text`` escaped only when it contains a delimiter (ACK ids never do)."""
    enc = h.encoding_characters
    if h.field_separator in text or any(c in text for c in enc):
        return _escape(text, h)
    return text


def _err_segment(error: AckError, h: MshHeader) -> str:
    sep, comp = h.field_separator, h.component_separator
    sub = h.encoding_characters[3] if len(h.encoding_characters) > 3 else "&"
    code_text = ERROR_TEXTS.get(error.hl7_code, ERROR_TEXTS["207"])
    seg, seq, fld = _location(error.location)
    detail = _escape(_ascii(error.detail)[:_MAX_TEXT], h)
    reason = _escape(_ascii(error.reason), h)
    if _version_tuple(h.version) >= (2, 5):
        erl = comp.join([seg, seq, fld]) if seg else ""
        cwe = comp.join([error.hl7_code, code_text, "HL70357"])
        fields = ["ERR", "", erl, cwe, "E", comp.join([reason, "", "L"]), "", "", detail]
    else:
        coded = sub.join([error.hl7_code, code_text, "HL70357"])
        fields = ["ERR", comp.join([seg, seq, fld, coded])]
    return _join(fields, sep)


def _location(location: str | None) -> tuple[str, str, str]:
    if not location:
        return "", "", ""
    name, _, number = location.partition("-")
    name = name.strip().upper()
    number = number.split(".")[0].strip()
    if len(name) != 3 or not name.isalnum() or (number and not number.isdigit()):
        return "", "", ""
    return name, "1", number


@functools.lru_cache(maxsize=64)
def _version_tuple(version: str) -> tuple[int, ...]:
    head = version.split("^", 1)[0].split("&", 1)[0]
    parts: list[int] = []
    for piece in head.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts) or (2, 5)


def _ascii(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def _escape(text: str, h: MshHeader) -> str:
    """Escape separators in text carebus writes, with the sender's encoding characters."""
    enc = h.encoding_characters
    esc = enc[2] if len(enc) > 2 else ""
    pairs = [(h.field_separator, "F"), (enc[0], "S")]
    if len(enc) > 1:
        pairs.append((enc[1], "R"))
    if len(enc) > 3:
        pairs.append((enc[3], "T"))
    if not esc:
        for ch, _ in pairs:
            text = text.replace(ch, " ")
        return text
    out = []
    mapping = dict(pairs)
    mapping[esc] = "E"
    for ch in text:
        out.append(f"{esc}{mapping[ch]}{esc}" if ch in mapping else ch)
    return "".join(out)


_NO_HEADER = MshHeader()


def _join(fields: Sequence[str], sep: str) -> str:
    items = list(fields)
    while len(items) > 2 and items[-1] == "":
        items.pop()
    if items[0] == "MSH":
        # MSH-1 is the separator itself: "MSH" + sep + MSH-2 + sep + MSH-3 ...
        return "MSH" + sep + sep.join(items[1:])
    return sep.join(items)
