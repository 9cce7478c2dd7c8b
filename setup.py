"""Builds carebus, compiling the ingest hot path with mypyc.

Everything else about the package is in ``pyproject.toml``. The compiled modules
are listed in ``carebus/compiled.py``; ``CAREBUS_COMPILE=0`` builds a pure-Python
package instead (no C compiler needed; the listener then uses more CPU per message).
"""

import os
import runpy
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def ext_modules() -> list[object]:
    if os.environ.get("CAREBUS_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify

    compiled = runpy.run_path(str(ROOT / "carebus" / "compiled.py"))
    # In an isolated build the runtime dependencies are absent: their types are Any.
    options = ["--ignore-missing-imports"]
    return list(
        mypycify(options + compiled["source_paths"](ROOT), opt_level="3", group_name="carebus")
    )


setup(ext_modules=ext_modules())
