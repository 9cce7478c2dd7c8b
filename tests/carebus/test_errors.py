"""The error tree: reason codes and what is retriable."""

from __future__ import annotations

import pytest

import connectors.hl7
import connectors.pipeline
import connectors.publish
from carebus import errors


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


# Loaded for the subclasses they use or define (the compiled hot path among them).
LOADED = (connectors.hl7, connectors.pipeline, connectors.publish)
REJECTIONS = _subclasses(errors.MessageRejected)


class TestReasons:
    @pytest.mark.parametrize("cls", REJECTIONS, ids=lambda cls: cls.__name__)
    def test_each_rejection_says_its_own_reason(self, cls: type[errors.MessageRejected]) -> None:
        """A rejection's reason code (MSA-3, the dead letter's header) is not its parent's."""
        parent = cls.__mro__[1]
        assert cls.reason != parent.reason
        assert cls("detail").reason == cls.reason

    def test_reason_codes_are_unique(self) -> None:
        """No two kinds of rejection share a reason code."""
        reasons = [cls.reason for cls in REJECTIONS]
        assert len(set(reasons)) == len(reasons)

    def test_the_ingest_codes_are_the_documented_ones(self) -> None:
        """The codes integrators see in AR ACKs for framing, defects and size."""
        assert errors.FramingError("x").reason == "framing-error"
        assert errors.TranslationFailed("x").reason == "translation-failed"
        assert errors.MessageTooLarge("x").reason == "message-too-large"
        assert isinstance(errors.FramingError("x"), errors.Unparseable)


class TestRetriable:
    def test_only_kafka_trouble_is_retriable(self) -> None:
        """Kafka being unavailable is worth a resend; a rejected message is not."""
        assert errors.KafkaUnavailable.retriable
        assert errors.PublishFailed.retriable
        assert not any(cls.retriable for cls in [errors.MessageRejected, *REJECTIONS])
        assert not errors.ConfigError.retriable
