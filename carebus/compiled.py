"""The ingest hot path, compiled: which modules are built with mypyc, and whether they were.

Parsing, translation, Avro encoding, acknowledgements and the listener's
per-message code are ordinary typed Python, compiled to C extension modules by
mypyc when the package is built (``setup.py``; ``CAREBUS_COMPILE=0`` builds
without). The same source runs either way; compiled, the listener uses about 7%
(two processes) to 17% (one) less CPU per message (``python -m benchmarks mllp``
compares the two).

This module is read by ``setup.py`` before anything is installed, so it imports
nothing from carebus.
"""

from __future__ import annotations

import importlib
import importlib.machinery
from pathlib import Path

#: The modules mypyc compiles, in dotted form: pure code, and the pipeline that runs
#: it. Not here: the I/O edges (the MLLP server, TLS, the aiokafka publisher), where
#: objects from asyncio, uvloop, ssl and aiokafka cross, whose runtime types do not
#: always match their stubs (compiled code checks them: uvloop's ``Server.sockets``
#: is a list, typed a tuple), and code off the per-message path.
MODULES: tuple[str, ...] = (
    "connectors.dedup",
    "connectors.hl7.charset",
    "connectors.hl7.encoding",
    "connectors.hl7.escape",
    "connectors.hl7.framing",
    "connectors.hl7.message",
    "connectors.hl7.parse",
    "connectors.mllp.ack",
    "connectors.partition",
    "connectors.pipeline",
    "connectors.translate",
    "connectors.translate.adt",
    "connectors.translate.common",
    "connectors.translate.documents",
    "connectors.translate.orders",
    "connectors.translate.problems",
    "connectors.translate.referral",
    "connectors.translate.results",
    "connectors.translate.scheduling",
    "connectors.translate.time",
    "schemas._writer",
)


def source_paths(root: Path) -> list[str]:
    """:data:`MODULES` as source paths relative to ``root``, the repository, for the build."""
    paths = []
    for name in MODULES:
        path = name.replace(".", "/")
        paths.append(f"{path}/__init__.py" if (root / path).is_dir() else f"{path}.py")
    return paths


def is_compiled(name: str) -> bool:
    """Whether module ``name`` was loaded from a compiled extension."""
    module = importlib.import_module(name)
    origin = getattr(module, "__file__", None) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def hot_path() -> str:
    """``compiled`` when every module of :data:`MODULES` is, ``interpreted`` when none is,
    ``partly compiled`` otherwise."""
    compiled = sum(is_compiled(name) for name in MODULES)
    if compiled == len(MODULES):
        return "compiled"
    return "interpreted" if compiled == 0 else "partly compiled"


def stale() -> list[str]:
    """Compiled modules older than their source, in a checkout built in place.

    An extension module shadows its ``.py`` file, so an edit takes effect only once
    the package is rebuilt (``make`` does that before running anything).
    """
    found = []
    for name in MODULES:
        if not is_compiled(name):
            continue
        extension = Path(importlib.import_module(name).__file__ or "")
        if {"site-packages", "dist-packages"} & set(extension.parts):
            continue  # installed from a wheel: its files' times say nothing
        stem = extension.name.split(".", 1)[0]
        source = extension.with_name(f"{stem}.py")
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
            found.append(name)
    return found
