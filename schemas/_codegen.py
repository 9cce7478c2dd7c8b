"""What the generated Avro writer and reader share: emitting source, then compiling it.

:mod:`schemas._writer` and :mod:`schemas._reader` each turn a record schema into one
straight-line Python function. :class:`Emitter` collects the function's lines, its
fresh local names and the constants it refers to (never text from the schema);
:func:`define` compiles the lines with the helpers and constants as its globals and
returns the function.
"""

from __future__ import annotations

from typing import Any


class Unsupported(Exception):
    """The schema uses a shape the generated code does not handle (use fastavro)."""


def require_record(schema: Any) -> None:
    """:class:`Unsupported` unless ``schema`` is a JSON record schema."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise Unsupported("top level must be a record")


class Emitter:
    """The lines, locals and constants of one generated function."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        #: named types met so far, by full name (a later reference by name is to one)
        self.named: dict[str, Any] = {}
        self._count = 0

    def line(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def var(self) -> str:
        """A fresh local name."""
        self._count += 1
        return f"v{self._count}"

    def constant(self, value: Any) -> str:
        """The global name ``value`` is passed to the function under."""
        name = f"C{len(self.constants)}"
        self.constants[name] = value
        return name


def define(
    lines: list[str], entry: str, helpers: dict[str, Any], emitter: Emitter, label: str
) -> Any:
    """Compile ``lines`` (defining function ``entry``) with ``helpers`` and the emitter's
    constants as globals; return the function. ``label`` names it in tracebacks.
    """
    env = dict(helpers, **emitter.constants)
    exec(compile("\n".join(lines), f"<{label}>", "exec"), env)  # noqa: S102
    return env[entry]
