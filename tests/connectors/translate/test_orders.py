"""Tests for connectors/translate/orders.py: ORM^O01 and OML^O21."""

from __future__ import annotations

import pytest

from carebus.errors import MissingRequiredField
from tests.connectors.translate.helpers import msh, only, pid, segment, translate_segments

ORC = "ORC|NW|PL123|FL456||IP"
OBR = "OBR|1|PL123|FL456|4548-4^Hemoglobin A1c^LN"


class TestOrder:
    @pytest.mark.parametrize("message_type", ["ORM^O01^ORM_O01", "OML^O21^OML_O21"])
    def test_each_orc_with_its_obr(self, message_type: str) -> None:
        """An ORC and the OBR after it give one item: control, numbers, status, test."""
        event = only(translate_segments(msh(message_type), pid(), "PV1|1|O", ORC, OBR))
        assert event.schema == "carebus.events.Order"
        assert event.record["items"] == [
            {
                "order_control": "NW",
                "placer_order_number": "PL123",
                "filler_order_number": "FL456",
                "order_status": "IP",
                "test_code": "4548-4",
                "test_text": "Hemoglobin A1c",
                "coding_system": "LN",
            }
        ]

    def test_several_orders_in_message_order(self) -> None:
        """Several ORC/OBR pairs give several items, in order."""
        items = only(
            translate_segments(
                msh("ORM^O01"), pid(), ORC, OBR, "ORC|CA|PL9", "OBR|2|PL9||2345-7^Glucose^LN"
            )
        ).record["items"]
        assert [(i["order_control"], i["test_code"]) for i in items] == [
            ("NW", "4548-4"),
            ("CA", "2345-7"),
        ]

    def test_a_second_obr_shares_the_orc(self) -> None:
        """An OBR after an ORC that already has one gets its own item with that ORC's control."""
        items = only(
            translate_segments(msh("OML^O21"), pid(), ORC, OBR, "OBR|2|||2345-7^Glucose^LN")
        ).record["items"]
        assert [(i["order_control"], i["test_code"]) for i in items] == [
            ("NW", "4548-4"),
            ("NW", "2345-7"),
        ]

    def test_order_numbers_fall_back_to_obr(self) -> None:
        """Empty ORC-2/ORC-3 take OBR-2/OBR-3."""
        item = only(translate_segments(msh("ORM^O01"), pid(), "ORC|NW", OBR)).record["items"][0]
        assert (item["placer_order_number"], item["filler_order_number"]) == ("PL123", "FL456")

    def test_an_orc_without_obr(self) -> None:
        """A non-lab order (ORC without OBR) is an item with no test code."""
        item = only(translate_segments(msh("ORM^O01"), pid(), ORC, "RXO|1")).record["items"][0]
        assert item["order_control"] == "NW"
        assert item["test_code"] is None

    def test_obr_without_orc_is_rejected(self) -> None:
        """An OBR with no ORC before it is MissingRequiredField ORC."""
        with pytest.raises(MissingRequiredField) as info:
            translate_segments(msh("OML^O21"), pid(), OBR)
        assert info.value.field == "ORC"

    def test_no_orc_is_rejected(self) -> None:
        """An order message with no ORC at all is MissingRequiredField ORC."""
        with pytest.raises(MissingRequiredField) as info:
            translate_segments(msh("ORM^O01"), pid())
        assert info.value.field == "ORC"

    def test_empty_order_control_is_rejected(self) -> None:
        """An ORC without ORC-1 is MissingRequiredField ORC-1."""
        with pytest.raises(MissingRequiredField) as info:
            translate_segments(msh("ORM^O01"), pid(), segment("ORC", {2: "PL1"}), OBR)
        assert info.value.field == "ORC-1"
