"""Optional strict validation, per sender, with hl7apy: off the hot path.

Most feeds are parsed tolerantly. For the sending facilities (MSH-4.1) listed in
``TranslateSettings.strict_senders``, :class:`StrictValidator` also checks the
message against the HL7 standard structure with hl7apy (imported on first use,
as it is slow: about a hundred times slower than carebus's own parser). A failure
raises :class:`StrictValidationFailed`, naming the hl7apy error class only: its
messages can quote field values, which may be patient data.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from carebus.errors import Unparseable
from connectors.hl7.message import Message


class StrictValidationFailed(Unparseable):
    """The message does not conform to the HL7 standard (strict senders only)."""

    reason = "strict-validation-failed"


def validate_strict(message: Message) -> None:
    """Check ``message`` with hl7apy at strict level; :class:`StrictValidationFailed` if not."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import UnsupportedVersion
    from hl7apy.parser import parse_message

    control_id = message.control_id or None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = parse_message(message.text, validation_level=VALIDATION_LEVEL.STRICT)
            parsed.validate()
    except UnsupportedVersion as exc:
        raise StrictValidationFailed(
            f"HL7 version {message.version!r} cannot be validated strictly",
            control_id=control_id,
            field="MSH-12",
        ) from exc
    except Exception as exc:  # hl7apy raises many types, including bare ValueError
        raise StrictValidationFailed(
            f"not a valid HL7 {message.version} {message.message_type}^{message.trigger_event} "
            f"({type(exc).__name__})",
            control_id=control_id,
        ) from exc


class StrictValidator:
    """Validates messages strictly when their sending facility asks for it."""

    def __init__(self, strict_senders: Iterable[str]) -> None:
        self.strict_senders = frozenset(strict_senders)

    def applies_to(self, message: Message) -> bool:
        """True when MSH-4.1 is one of the strict senders."""
        return bool(self.strict_senders) and message.sending_facility in self.strict_senders

    def check(self, message: Message) -> None:
        """Validate ``message`` if its sender is strict; raise :class:`StrictValidationFailed`."""
        if self.applies_to(message):
            validate_strict(message)
