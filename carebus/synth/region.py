"""The synthetic region: its providers and the region config that matches them.

Every organisation is fictional. Codes look like NHS organisation codes but use
an ``X`` prefix that no real trust, practice or hospice in this region uses, and
names say they are examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class Provider:
    """One organisation that sends messages to the bus."""

    code: str
    name: str
    kind: str
    #: True when its system writes timestamps with a UTC offset (``+0100``);
    #: false when it sends Europe/London local time without one.
    offsets: bool = True
    #: How its laboratory system sends orders: ``ORM^O01`` or ``OML^O21``.
    order_message: str = "ORM"


@dataclass(frozen=True, slots=True)
class SyntheticRegion:
    """The providers of the synthetic region, grouped by kind."""

    hospitals: tuple[Provider, ...]
    practices: tuple[Provider, ...]
    hospices: tuple[Provider, ...]
    community: Provider
    council: Provider

    @property
    def providers(self) -> tuple[Provider, ...]:
        """Every provider, hospitals first."""
        return (
            *self.hospitals,
            *self.practices,
            *self.hospices,
            self.community,
            self.council,
        )

    def local_hospital(self, practice: Provider) -> Provider:
        """The trust a practice's patients are usually referred to."""
        return self.hospitals[self.practices.index(practice) % len(self.hospitals)]

    def local_hospice(self, practice: Provider) -> Provider:
        """The hospice that serves a practice's patients."""
        return self.hospices[self.practices.index(practice) % len(self.hospices)]


_TOWNS = (
    "Exampleton",
    "Sampleford",
    "Fictonbury",
    "Mockley",
    "Dummington",
    "Placeholder Green",
)

REGION = SyntheticRegion(
    hospitals=(
        Provider("XRA", "Exampleton Teaching Hospitals NHS Trust (example)", "hospital"),
        Provider("XRB", "Sampleford and District Hospital NHS Trust (example)", "hospital"),
        Provider(
            "XRC",
            "Fictonbury Royal Infirmary NHS Trust (example)",
            "hospital",
            order_message="OML",
        ),
    ),
    practices=tuple(
        Provider(
            f"X8{n:04d}",
            f"{_TOWNS[n % len(_TOWNS)]} {label} Surgery (example)",
            "gp",
            offsets=False,
        )
        for n, label in enumerate(
            (
                "High Street",
                "Riverside",
                "Park Lane",
                "Market Square",
                "Station Road",
                "Church View",
                "Mill Lane",
                "Orchard",
                "Hillside",
                "Meadow",
                "Bridge",
                "Castle",
            ),
            start=1,
        )
    ),
    hospices=(
        Provider("XHS01", "St Example's Hospice (example)", "hospice", offsets=False),
        Provider("XHS02", "Sampleford Hospice at Home (example)", "hospice", offsets=False),
    ),
    community=Provider(
        "XCM", "Exampleshire Community Health Services (example)", "community", offsets=False
    ),
    council=Provider("XLA", "Exampleshire County Council (example)", "council", offsets=False),
)

#: SNOMED CT "On palliative care register".
EOL_REGISTER_CODE = "1403151000000103"
#: RF1-2 priority of a suspected-cancer (two-week-wait) referral.
CANCER_PRIORITY = "2WW"
#: TXA-2 document type of the letter that gives the outcome of a cancer referral.
CANCER_OUTCOME_DOCUMENT = "CANCER-OUTCOME"


def region_config(region: SyntheticRegion = REGION) -> dict[str, Any]:
    """The region config (as in the coordination-rules spec) for ``region``."""
    return {
        "providers": {p.code: {"name": p.name, "kind": p.kind} for p in region.providers},
        "suspected_cancer": {
            "priorities": [CANCER_PRIORITY],
            "outcome_document_types": [CANCER_OUTCOME_DOCUMENT],
        },
        "eol_register_codes": [EOL_REGISTER_CODE],
        "hospice_discharge_destinations": ["88"],
        "emergency_admission_types": ["E"],
        "retest_intervals_days": {"4548-4": 90, "2857-1": 42, "2039-6": 42},
    }


def region_yaml(region: SyntheticRegion = REGION) -> str:
    """The region config as YAML text."""
    header = "# Synthetic region written by `carebus generate`: every organisation is fictional.\n"
    body = yaml.safe_dump(region_config(region), sort_keys=False, allow_unicode=True, width=100)
    return header + body
