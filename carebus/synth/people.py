"""Synthetic patients: clearly fictional names, addresses and numbers.

Family names are tree and bird names, given names come from a short list, towns
are invented, postcodes use the ``ZZ`` area (no such area exists), telephone
numbers are in the 01632 960 range that Ofcom keeps for drama, and NHS numbers
are in the test range (see :mod:`carebus.synth.nhs`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from carebus.synth import nhs
from carebus.synth.region import Provider, SyntheticRegion

_FAMILY = (
    "ALDER", "ASPEN", "BIRCH", "BRAMBLE", "CEDAR", "CHAFFINCH", "CURLEW", "DUNNOCK",
    "ELDER", "FIELDFARE", "GOLDCREST", "HAWTHORN", "HAZEL", "HOLLY", "HORNBEAM",
    "JACKDAW", "KESTREL", "LAPWING", "LARCH", "LINDEN", "LINNET", "MAPLE", "MERLIN",
    "NUTHATCH", "OSPREY", "PLOVER", "REDWING", "ROWAN", "SISKIN", "SORREL",
    "SPRUCE", "STARLING", "SWIFT", "TEAL", "WAGTAIL", "WILLOW", "WREN", "YEW",
)  # fmt: skip
_GIVEN_F = (
    "ADA", "BERYL", "CORA", "DORA", "EDNA", "FLORA", "GRETA", "HILDA", "IRIS",
    "JUNE", "MAVIS", "NORA", "OLIVE", "PEARL", "RUBY", "VERA",
)  # fmt: skip
_GIVEN_M = (
    "ALFRED", "BASIL", "CYRIL", "DENNIS", "ERNEST", "FRANK", "GORDON", "HAROLD",
    "IVOR", "LESLIE", "NORMAN", "OSWALD", "PERCY", "ROLAND", "STANLEY", "WILFRED",
)  # fmt: skip
_STREETS = (
    "Example Road", "Sample Street", "Test Lane", "Placeholder Avenue", "Fiction Close",
    "Mock Terrace", "Specimen Way", "Dummy Crescent",
)  # fmt: skip
_TOWNS = ("EXAMPLETON", "SAMPLEFORD", "FICTONBURY", "MOCKLEY", "DUMMINGTON")


@dataclass(frozen=True, slots=True)
class Address:
    """A fictional postal address."""

    street: str
    town: str
    postcode: str


@dataclass(frozen=True, slots=True)
class Person:
    """A synthetic patient and where they are usually cared for."""

    index: int
    nhs_number: str
    family: str
    given: str
    birth_date: date
    sex: str
    address: Address
    phone: str
    practice: Provider
    gp_code: str
    hospital: Provider
    hospice: Provider

    def mrn(self, provider: Provider) -> str:
        """The patient's local identifier (hospital number) at ``provider``."""
        offset = sum(map(ord, provider.code)) * 104_729
        return f"{provider.code[0]}{(self.index * 7_919 + offset) % 100_000_000:08d}"


def fake_address(rng: random.Random) -> Address:
    """A fictional address with a ``ZZ`` postcode."""
    return Address(
        street=f"{rng.randint(1, 199)} {rng.choice(_STREETS)}".upper(),
        town=rng.choice(_TOWNS),
        postcode=f"ZZ{rng.randint(1, 99)} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
        f"{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}",
    )


def make_person(index: int, rng: random.Random, region: SyntheticRegion, today: date) -> Person:
    """A synthetic patient aged 40 to 99 on ``today``, registered at a region practice."""
    sex = rng.choice("FM")
    practice = rng.choice(region.practices)
    age_days = rng.randint(40 * 365, 99 * 365)
    return Person(
        index=index,
        nhs_number=nhs.synthetic(rng),
        family=rng.choice(_FAMILY),
        given=rng.choice(_GIVEN_F if sex == "F" else _GIVEN_M),
        birth_date=today - timedelta(days=age_days),
        sex=sex,
        address=fake_address(rng),
        phone=f"01632 960{rng.randrange(1000):03d}",
        practice=practice,
        gp_code=f"G9{region.practices.index(practice):02d}{rng.randrange(4):04d}",
        hospital=region.local_hospital(practice),
        hospice=region.local_hospice(practice),
    )
