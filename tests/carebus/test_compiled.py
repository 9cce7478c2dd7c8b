"""The compiled hot path: what is compiled, and how a stale build is caught."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from carebus import compiled

REPO_ROOT = Path(__file__).resolve().parents[2]


class TestModules:
    def test_every_listed_module_has_its_source_in_the_repository(self) -> None:
        """Each compiled module names a source file the build can find."""
        paths = compiled.source_paths(REPO_ROOT)
        assert len(paths) == len(compiled.MODULES)
        for path in paths:
            assert (REPO_ROOT / path).is_file(), path

    def test_a_package_is_built_from_its_init(self) -> None:
        """A package in the list is compiled from its ``__init__.py``."""
        paths = compiled.source_paths(REPO_ROOT)
        assert "connectors/translate/__init__.py" in paths
        assert "connectors/translate/adt.py" in paths

    def test_the_io_edges_stay_interpreted(self) -> None:
        """The MLLP server, the publisher and TLS, where foreign objects cross, are not compiled."""
        for edge in ("connectors.mllp.server", "connectors.publish", "connectors.mllp.tls"):
            assert edge not in compiled.MODULES
            assert not compiled.is_compiled(edge)

    def test_the_build_compiles_every_module_unless_told_not_to(self) -> None:
        """A normal build loads every listed module compiled; CAREBUS_COMPILE=0, none."""
        # `make` builds the package; CAREBUS_COMPILE=0 asks for pure Python.
        wanted = "interpreted" if os.environ.get("CAREBUS_COMPILE") == "0" else "compiled"
        assert compiled.hot_path() == wanted


@pytest.mark.skipif(compiled.hot_path() != "compiled", reason="the hot path is not compiled")
class TestStale:
    def test_an_edited_source_makes_its_compiled_module_stale(self) -> None:
        """A source newer than its extension is reported, and no longer once it is not."""
        module = importlib.import_module("connectors.dedup")
        extension = Path(module.__file__ or "")
        source = extension.with_name("dedup.py")
        before = source.stat()
        try:
            later = extension.stat().st_mtime + 60
            os.utime(source, (later, later))
            assert compiled.stale() == ["connectors.dedup"]
        finally:
            os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert compiled.stale() == []
