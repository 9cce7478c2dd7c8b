"""Tests for connectors/translate/documents.py: MDM."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carebus.errors import MissingRequiredField
from tests.connectors.translate.helpers import evn, msh, only, pid, translate_segments

TXA = "TXA|1|CANCER-OUTCOME|TX|20260301100000||||||||DOC123|||||AU"


class TestDocument:
    @pytest.mark.parametrize("trigger", [f"T{n:02d}" for n in range(1, 12)])
    def test_every_mdm_trigger_gives_a_document(self, trigger: str) -> None:
        """MDM T01 to T11 each give a Document."""
        event = only(translate_segments(msh(f"MDM^{trigger}"), evn(), pid(), "PV1|1|O", TXA))
        assert event.schema == "carebus.events.Document"

    def test_fields_from_txa(self) -> None:
        """Type, id, completion status and activity time come from TXA."""
        record = only(
            translate_segments(msh("MDM^T02^MDM_T02"), evn(), pid(), TXA, "OBX|1|TX|||Text")
        ).record
        assert record["document_type"] == "CANCER-OUTCOME"
        assert record["document_id"] == "DOC123"
        assert record["completion_status"] == "AU"
        assert record["activity_time"] == datetime(2026, 3, 1, 10, tzinfo=UTC)

    def test_missing_txa_is_rejected(self) -> None:
        """An MDM without TXA is MissingRequiredField TXA."""
        with pytest.raises(MissingRequiredField) as info:
            translate_segments(msh("MDM^T02"), evn(), pid())
        assert info.value.field == "TXA"
