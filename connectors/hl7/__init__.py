"""HL7 v2 for carebus: a fast, tolerant parser and feed framing.

``parse_message(raw)`` gives a :class:`Message` whose segments split lazily;
``iter_feed(data)`` splits a feed file (MLLP, plain, FHS/BHS batches) into messages;
``MllpDecoder`` splits a socket byte stream into MLLP frames and ``frame`` wraps one.
"""

from carebus.errors import FramingError
from connectors.hl7.charset import DEFAULT_FALLBACK, codec_for
from connectors.hl7.encoding import DEFAULT_ENCODING, Encoding
from connectors.hl7.escape import escape, unescape
from connectors.hl7.framing import FeedItem, MllpDecoder, frame, iter_feed
from connectors.hl7.message import Layout, Message, Segment
from connectors.hl7.parse import parse_message
from connectors.hl7.validate import StrictValidationFailed, StrictValidator, validate_strict

__all__ = [
    "DEFAULT_ENCODING",
    "DEFAULT_FALLBACK",
    "Encoding",
    "FeedItem",
    "FramingError",
    "Layout",
    "Message",
    "MllpDecoder",
    "Segment",
    "StrictValidationFailed",
    "StrictValidator",
    "codec_for",
    "escape",
    "frame",
    "iter_feed",
    "parse_message",
    "unescape",
    "validate_strict",
]
