"""Errors raised by the ``schemas`` package.

``schemas`` depends on nothing else in carebus, so it has its own small tree;
callers translate these at their boundary (``raise ... from exc``)::

    SchemaError                  base
    ├── UnknownSchema            no schema by that name or fingerprint
    ├── EncodeError              the record does not fit its schema
    ├── DecodeError              the bytes are not a record carebus can read
    └── RegistryError            the Confluent Schema Registry failed (retriable)

Messages name schemas, fields and fingerprints, never field values.
"""

from __future__ import annotations


class SchemaError(Exception):
    """Base of every error the schemas package raises."""

    retriable: bool = False


class UnknownSchema(SchemaError, KeyError):
    """No schema with that name, fingerprint or registry id is known."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown schema"


class EncodeError(SchemaError, ValueError):
    """A record does not match its schema."""


class DecodeError(SchemaError, ValueError):
    """Bytes that are not a readable single-object or Confluent-framed record."""


class RegistryError(SchemaError):
    """The schema registry could not be reached or refused a request."""

    retriable = True
