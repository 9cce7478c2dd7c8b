"""``carebus worker`` with one faulty rule (``python -m tests.streams.integration.faulty_worker``).

The extra rule ``poison-test`` sees every event and raises ``ValueError`` on the one
whose MSH-10 control id is in the ``POISON_CONTROL_ID`` environment variable (and on
nothing else). It is added before :mod:`streams.engine` is imported, so the worker's
engine runs it with the fourteen real rules. Everything else is the real worker.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import streams.rules
from streams.rules.base import Rule
from streams.view import SCHEMAS

POISON = os.environ.get("POISON_CONTROL_ID", "")


def _poison(view: Any, state: Any, region: Any) -> list[Any]:
    if view.control_id == POISON:
        raise ValueError(f"poison-test rule raised on {view.patient_key}")
    return []


POISON_RULE = Rule(
    id="poison-test",
    schemas=SCHEMAS,
    on_event=_poison,
)
streams.rules.RULES = (*streams.rules.RULES, POISON_RULE)

if __name__ == "__main__":
    from carebus.cli import main

    sys.exit(main(["worker"]))
