"""Tests for connectors/translate/problems.py: PPR."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carebus.errors import MissingRequiredField
from tests.connectors.translate.helpers import msh, only, pid, translate_segments

PRB = "PRB|AD|20260201120000|1403151000000103^On palliative care register^SCT|P1"


class TestProblem:
    @pytest.mark.parametrize(
        ("trigger", "action"), [("PC1", "ADDED"), ("PC2", "UPDATED"), ("PC3", "DELETED")]
    )
    def test_action_follows_the_trigger(self, trigger: str, action: str) -> None:
        """PC1, PC2 and PC3 give a Problem that was added, updated or deleted."""
        event = only(translate_segments(msh(f"PPR^{trigger}"), pid(), PRB))
        assert event.schema == "carebus.events.Problem"
        assert event.record["action"] == action

    def test_every_prb_in_order(self) -> None:
        """Each PRB gives a problem with action, time, instance and code."""
        problems = only(
            translate_segments(msh("PPR^PC1"), pid(), PRB, "PRB|UP||73211009^Diabetes^SCT|P2")
        ).record["problems"]
        assert problems == [
            {
                "action_code": "AD",
                "action_time": datetime(2026, 2, 1, 12, tzinfo=UTC),
                "instance_id": "P1",
                "code": "1403151000000103",
                "text": "On palliative care register",
                "coding_system": "SCT",
            },
            {
                "action_code": "UP",
                "action_time": None,
                "instance_id": "P2",
                "code": "73211009",
                "text": "Diabetes",
                "coding_system": "SCT",
            },
        ]

    def test_missing_prb_is_rejected(self) -> None:
        """A PPR without PRB is MissingRequiredField PRB."""
        with pytest.raises(MissingRequiredField) as info:
            translate_segments(msh("PPR^PC1"), pid())
        assert info.value.field == "PRB"
