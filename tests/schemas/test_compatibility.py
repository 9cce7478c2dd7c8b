"""Backward compatibility: each current schema reads data written by its last release.

``schemas/released/<version>/`` keeps the schemas as released. For every record
schema that existed in the previous release, data written with the released
schema must read with the current one (Avro schema resolution, as fastavro does
it). A change that breaks old data (a new field without a default, a removed
enum symbol, a changed type) fails here; bump the release snapshot only when
releasing.
"""

from __future__ import annotations

import copy
from io import BytesIO
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

import schemas
from schemas.codec import parse
from tests.schemas.samples import sample

PREVIOUS = schemas.released_versions()[-1]
#: Record schemas added since the previous release: no data was written with them then.
ADDED_SINCE_RELEASE = frozenset({"carebus.events.FeedWatermark"})


def _resolve(writer_schema: dict[str, Any], reader_schema: dict[str, Any], fill: bool) -> Any:
    record = sample(writer_schema, fill=fill)
    body = BytesIO()
    schemaless_writer(body, parse(writer_schema), record)
    body.seek(0)
    return record, schemaless_reader(body, parse(writer_schema), parse(reader_schema))


class TestBackwardCompatible:
    def test_only_schemas_added_since_the_release_are_missing_from_it(self) -> None:
        """Every other record schema was snapshotted at the previous release."""
        missing = {
            n for n in schemas.RECORD_SCHEMAS if schemas.released_schema(PREVIOUS, n) is None
        }
        assert missing == ADDED_SINCE_RELEASE

    @pytest.mark.parametrize("name", sorted(set(schemas.RECORD_SCHEMAS) - ADDED_SINCE_RELEASE))
    @pytest.mark.parametrize("fill", [True, False], ids=["filled", "nulls"])
    def test_current_schema_reads_previous_release(self, name: str, fill: bool) -> None:
        """Data written with the previous release's schema reads with the current schema."""
        released = schemas.released_schema(PREVIOUS, name)
        if released is None:
            pytest.fail(f"{name} is missing from release {PREVIOUS}; snapshot it when releasing")
        written, read = _resolve(released, schemas.schema(name), fill)
        kept = {f["name"] for f in schemas.schema(name)["fields"]} & set(written)
        assert kept
        assert {k: read[k] for k in kept} == {k: written[k] for k in kept}

    def test_the_check_catches_a_new_field_without_default(self) -> None:
        """A reader schema that adds a required field cannot read old data: the check can fail."""
        released = schemas.released_schema(PREVIOUS, "carebus.alerts.Alert")
        assert released is not None
        broken = copy.deepcopy(released)
        broken["fields"].append({"name": "severity", "type": "string", "doc": "new"})
        with pytest.raises(SchemaResolutionError):
            _resolve(released, broken, fill=True)

    def test_a_new_optional_field_with_default_is_compatible(self) -> None:
        """Adding a nullable field with a null default keeps old data readable."""
        released = schemas.released_schema(PREVIOUS, "carebus.alerts.Alert")
        assert released is not None
        grown = copy.deepcopy(released)
        grown["fields"].append(
            {"name": "severity", "type": ["null", "string"], "default": None, "doc": "new"}
        )
        _, read = _resolve(released, grown, fill=True)
        assert read["severity"] is None
