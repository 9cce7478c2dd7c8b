"""Read ``.avsc`` files and expand references into self-contained schemas.

Each named type lives in its own file, ``<namespace>.<Name>.avsc``, and other
files refer to it by full name. :func:`expand` inlines the first use of each
referenced type, so every top-level schema is complete on its own: that form is
what gets fingerprinted, parsed and registered.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from schemas.errors import SchemaError

JsonSchema = Any


def full_name(definition: dict[str, Any]) -> str:
    """The full name of a named type: ``namespace.name``."""
    name = str(definition["name"])
    namespace = definition.get("namespace")
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def read_definitions(directory: Path) -> dict[str, dict[str, Any]]:
    """Every named type defined in ``directory/*.avsc``, by full name."""
    definitions: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.avsc")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaError(f"cannot read schema file {path.name}") from exc
        name = full_name(data)
        if path.name != f"{name}.avsc":
            raise SchemaError(f"schema file {path.name} defines {name}; name it {name}.avsc")
        definitions[name] = data
    return definitions


def expand(name: str, definitions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The schema of ``name`` with every referenced named type inlined once."""
    if name not in definitions:
        raise SchemaError(f"no schema named {name}")
    result: dict[str, Any] = _inline(definitions[name], definitions, set())
    return result


def _inline(node: JsonSchema, definitions: dict[str, dict[str, Any]], seen: set[str]) -> JsonSchema:
    if isinstance(node, str):
        if node in definitions and node not in seen:
            return _inline(definitions[node], definitions, seen)
        return node
    if isinstance(node, list):
        return [_inline(branch, definitions, seen) for branch in node]
    if not isinstance(node, dict):
        return node
    node = copy.deepcopy(node)
    kind = node.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        seen.add(full_name(node))
    if kind in ("record", "error"):
        for field in node["fields"]:
            field["type"] = _inline(field["type"], definitions, seen)
    elif kind == "array":
        node["items"] = _inline(node["items"], definitions, seen)
    elif kind == "map":
        node["values"] = _inline(node["values"], definitions, seen)
    elif isinstance(kind, (dict, list)):
        node["type"] = _inline(kind, definitions, seen)
    return node
