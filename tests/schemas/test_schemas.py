"""Tests for schemas/__init__.py and schemas/_loader.py: the .avsc files and their loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema

import schemas
from schemas._loader import expand, full_name, read_definitions
from schemas.errors import SchemaError, UnknownSchema

AVSC_FILES = sorted(schemas.SCHEMA_DIR.glob("*.avsc"))


def _walk_fields(node: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every (record name, field) in a schema, nested inline types included."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, list):
        for branch in node:
            found += _walk_fields(branch)
    elif isinstance(node, dict):
        if node.get("type") == "record":
            for field in node["fields"]:
                found.append((node["name"], field))
                found += _walk_fields(field["type"])
        elif node.get("type") == "array":
            found += _walk_fields(node["items"])
    return found


def _defined_names(node: Any) -> set[str]:
    """Full names of the records and enums defined anywhere in a schema."""
    names: set[str] = set()
    if isinstance(node, list):
        for branch in node:
            names |= _defined_names(branch)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum"):
            names.add(full_name(node))
        for field in node.get("fields", []):
            names |= _defined_names(field["type"])
        if node.get("type") == "array":
            names |= _defined_names(node["items"])
    return names


class TestSchemaFiles:
    def test_there_is_one_file_per_named_type(self) -> None:
        """Each .avsc file is named after the full name of the type it defines."""
        assert AVSC_FILES
        for path in AVSC_FILES:
            data = json.loads(path.read_text(encoding="utf-8"))
            assert path.name == f"{full_name(data)}.avsc"

    @pytest.mark.parametrize("path", AVSC_FILES, ids=lambda p: p.stem)
    def test_every_field_and_type_has_a_doc(self, path: Path) -> None:
        """Every record, enum and field in every file carries a non-empty doc."""
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data.get("doc", "").strip()
        for record, field in _walk_fields(data):
            assert field.get("doc", "").strip(), f"{record}.{field['name']} has no doc"
            kind = field["type"]
            for inner in kind if isinstance(kind, list) else [kind]:
                if isinstance(inner, dict) and inner.get("type") == "enum":
                    assert inner.get("doc", "").strip()

    def test_events_and_alerts_use_their_namespaces(self) -> None:
        """Event schemas live in carebus.events and alert schemas in carebus.alerts."""
        assert all(n.startswith("carebus.events.") for n in schemas.EVENT_SCHEMAS)
        assert all(n.startswith("carebus.alerts.") for n in schemas.ALERT_SCHEMAS)

    def test_every_event_starts_with_header_and_patient(self) -> None:
        """Each event record's first two fields are the shared Header and Patient."""
        for name in schemas.EVENT_SCHEMAS:
            fields = schemas.schema(name)["fields"]
            assert [f["name"] for f in fields[:2]] == ["header", "patient"]
            assert fields[0]["type"]["name"] == "Header"
            assert fields[1]["type"]["name"] == "Patient"

    def test_every_file_is_a_record_schema_or_used_by_one(self) -> None:
        """No .avsc file is orphaned: each is top-level or defined inside a top-level one."""
        used: set[str] = set()
        for name in schemas.RECORD_SCHEMAS:
            used |= _defined_names(schemas.schema(name))
        assert {p.stem for p in AVSC_FILES} <= used

    @pytest.mark.parametrize("name", schemas.RECORD_SCHEMAS)
    def test_each_record_schema_parses_on_its_own(self, name: str) -> None:
        """Each expanded record schema is complete: fastavro parses it with no other types."""
        parsed: Any = parse_schema(schemas.schema(name), named_schemas={})
        assert parsed["name"] == name

    def test_alert_has_the_fields_of_the_rules_output(self) -> None:
        """carebus.alerts.Alert has exactly the fields of the rules spec's Output section."""
        fields = [f["name"] for f in schemas.schema("carebus.alerts.Alert")["fields"]]
        assert fields == [
            "rule",
            "patient",
            "raised_at",
            "recipients",
            "dedup_key",
            "evidence",
            "summary",
        ]


class TestLookup:
    def test_unknown_name_raises_unknown_schema(self) -> None:
        """Asking for a schema that does not exist raises UnknownSchema, naming it."""
        with pytest.raises(UnknownSchema, match=r"carebus\.events\.Nope"):
            schemas.schema("carebus.events.Nope")

    def test_released_versions_include_0_1_0(self) -> None:
        """The 0.1.0 snapshot is kept and lists every record schema of that release."""
        assert "0.1.0" in schemas.released_versions()
        for name in (*schemas.EVENT_SCHEMAS, *schemas.ALERT_SCHEMAS):
            assert schemas.released_schema("0.1.0", name) is not None

    def test_released_schema_of_an_unknown_version_is_none(self) -> None:
        """A version that was never released has no schemas."""
        assert schemas.released_schema("0.0.1", "carebus.alerts.Alert") is None


class TestFingerprint:
    def test_matches_the_avro_specification_test_vector(self) -> None:
        """CRC-64-AVRO of "int" is 0x7275d51a3f395c8f, written little-endian."""
        assert schemas.fingerprint("int") == bytes.fromhex("8f5c393f1ad57572")

    def test_ignores_docs(self) -> None:
        """Docs are not part of the parsing canonical form, so they do not change it."""
        plain = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}
        documented = {
            "type": "record",
            "name": "R",
            "doc": "x",
            "fields": [{"name": "a", "type": "string", "doc": "y"}],
        }
        assert schemas.fingerprint(plain) == schemas.fingerprint(documented)

    def test_differs_between_schemas(self) -> None:
        """Every record schema has its own fingerprint."""
        prints = {schemas.fingerprint(schemas.schema(n)) for n in schemas.RECORD_SCHEMAS}
        assert len(prints) == len(schemas.RECORD_SCHEMAS)


class TestLoader:
    def _write(self, directory: Path, definition: dict[str, Any]) -> None:
        (directory / f"{full_name(definition)}.avsc").write_text(json.dumps(definition))

    def test_expand_inlines_the_first_reference_and_names_the_rest(self, tmp_path: Path) -> None:
        """A type used twice is defined at its first use and referred to by name after."""
        self._write(
            tmp_path,
            {
                "type": "record",
                "name": "Leaf",
                "namespace": "t",
                "fields": [{"name": "v", "type": "string"}],
            },
        )
        self._write(
            tmp_path,
            {
                "type": "record",
                "name": "Root",
                "namespace": "t",
                "fields": [
                    {"name": "a", "type": "t.Leaf"},
                    {"name": "b", "type": ["null", "t.Leaf"]},
                ],
            },
        )
        root = expand("t.Root", read_definitions(tmp_path))
        assert root["fields"][0]["type"]["name"] == "Leaf"
        assert root["fields"][1]["type"] == ["null", "t.Leaf"]
        parse_schema(root, named_schemas={})

    def test_a_misnamed_file_is_an_error(self, tmp_path: Path) -> None:
        """A file whose name is not the full name of its type is refused."""
        (tmp_path / "wrong.avsc").write_text(
            json.dumps({"type": "record", "name": "R", "namespace": "t", "fields": []})
        )
        with pytest.raises(SchemaError, match=r"t\.R\.avsc"):
            read_definitions(tmp_path)

    def test_invalid_json_is_an_error(self, tmp_path: Path) -> None:
        """A file that is not JSON is refused with its name."""
        (tmp_path / "t.R.avsc").write_text("{not json")
        with pytest.raises(SchemaError, match=r"t\.R\.avsc"):
            read_definitions(tmp_path)
