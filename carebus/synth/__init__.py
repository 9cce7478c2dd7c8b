"""Synthetic regional HL7 v2 feeds for demos, tests and benchmarks.

Pure and seeded: the same seed, start and size always give the same bytes.
Nothing here is real: organisations, people, addresses and NHS numbers are
fictional (see :mod:`carebus.synth.people` and :mod:`carebus.synth.region`).
"""

from carebus.synth.feed import DEFAULT_ARRIVALS_PER_DAY, generate, journeys, merge, messages
from carebus.synth.journeys import Journey, SynthMessage
from carebus.synth.region import REGION, SyntheticRegion, region_config, region_yaml

__all__ = [
    "DEFAULT_ARRIVALS_PER_DAY",
    "REGION",
    "Journey",
    "SynthMessage",
    "SyntheticRegion",
    "generate",
    "journeys",
    "merge",
    "messages",
    "region_config",
    "region_yaml",
]
