"""The carebus error tree. Each class says whether trying again can help.

::

    CarebusError                      retriable?
    ├── ConfigError                   no   bad settings, region config or arguments
    ├── BrokerError                   no   the local broker cannot be set up or started
    ├── KafkaUnavailable              yes  Kafka cannot be reached, or timed out
    │   └── PublishFailed             yes  a produce was not acknowledged (acks=all)
    └── MessageRejected               no   this message can never be accepted as sent
        ├── Unparseable                    not HL7 v2, or broken framing
        │   └── FramingError               MLLP framing broken, or a frame too large
        ├── UnsupportedMessageType         a message type carebus does not translate
        ├── MissingRequiredField           a field the event needs is empty
        ├── InvalidIdentifier              no usable patient identifier
        ├── SenderNotAllowed               a peer sending as a facility it may not use
        ├── TranslationFailed              translation or encoding failed (a defect)
        └── MessageTooLarge                Kafka refuses a record as too large

The ingest edge uses ``retriable`` to choose its answer: a retriable error gets
``AE`` (or no ACK) so the sender resends; a rejection gets ``AR`` (or ``AE`` when so
configured) with :attr:`MessageRejected.reason` in MSA-3, and the raw bytes go to
the dead-letter topic. Library exceptions (kafka-python, aiokafka, OSError) are
translated into these at the boundary, ``raise ... from exc``.

Every class of the tree lives here, in interpreted code: a subclass defined in a
module compiled by mypyc (:mod:`carebus.compiled`) would lose its class-level
``reason`` and ``hl7_error_code``.

Messages of these exceptions never contain patient data: they name fields
(``PID-3``), control ids and counts.
"""

from __future__ import annotations


class CarebusError(Exception):
    """Base of every error carebus raises on purpose."""

    retriable: bool = False


class ConfigError(CarebusError):
    """Settings, the region config or command-line arguments are wrong."""


class BrokerError(CarebusError):
    """The local Kafka broker could not be prepared, started or stopped."""


class KafkaUnavailable(CarebusError):
    """Kafka could not be reached or did not answer in time; try again later."""

    retriable = True


class PublishFailed(KafkaUnavailable):
    """A record was not durably written (acks=all) in time."""


class MessageRejected(CarebusError):
    """A message that can never be accepted as sent.

    ``reason`` is a stable machine-readable code (``unparseable``,
    ``unsupported-message-type``, ``missing-required-field``, ``invalid-identifier``,
    ``sender-not-allowed``, ...); ``detail`` is a short human sentence without
    patient data; ``control_id`` is MSH-10 when it could be read.
    """

    reason = "rejected"
    #: HL7 table 0357 error condition code used in ERR-3.
    hl7_error_code = "207"

    def __init__(self, detail: str, *, control_id: str | None = None, field: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.control_id = control_id
        self.field = field

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class Unparseable(MessageRejected):
    """Not an HL7 v2 message, or framing/encoding that cannot be read."""

    reason = "unparseable"
    hl7_error_code = "102"


class UnsupportedMessageType(MessageRejected):
    """A message type or trigger event carebus does not translate."""

    reason = "unsupported-message-type"
    hl7_error_code = "200"


class MissingRequiredField(MessageRejected):
    """A field the event needs is missing or empty."""

    reason = "missing-required-field"
    hl7_error_code = "101"


class InvalidIdentifier(MessageRejected):
    """No usable patient identifier."""

    reason = "invalid-identifier"
    hl7_error_code = "204"


class SenderNotAllowed(MessageRejected):
    """The connected peer may not send as this sending facility (MSH-4)."""

    reason = "sender-not-allowed"
    hl7_error_code = "207"


class FramingError(Unparseable):
    """MLLP framing is broken: bytes outside a frame, or a frame that is too large."""

    reason = "framing-error"

    def __init__(self, detail: str, *, frames: list[bytes] | None = None) -> None:
        super().__init__(detail)
        #: Frames completed in the same ``MllpDecoder.feed`` call before the error.
        self.frames = frames or []


class TranslationFailed(MessageRejected):
    """The translator or the encoder failed on this message (a carebus defect)."""

    reason = "translation-failed"
    hl7_error_code = "207"


class MessageTooLarge(MessageRejected):
    """Kafka refuses the message's raw record or an event as too large (never retriable)."""

    reason = "message-too-large"
    hl7_error_code = "207"
