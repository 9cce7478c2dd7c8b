"""HL7 v2 text used by the parser and framing tests (fictional patients only)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "fhir-converter-hl7v2"

#: An ADT^A01 in HL7 2.5.1 with repetitions, components and sub-components.
ADT_A01_251 = "\r".join(
    [
        r"MSH|^~\&|PAS|RXX01|CAREBUS|RYY02|20240105103000+0000||ADT^A01^ADT_A01|CTRL-251|P|2.5.1",
        r"EVN|A01|20240105102900|||||RXX01",
        r"PID|1||9434765919^^^NHS^NH~H123456^^^RXX01^MR||DOE^JANE^Q^^MS||19700101|F|||"
        r"1 HIGH STREET^^LEEDS^^LS1 1AA^GBR^H|||||||||||||||||||||01",
        r"PV1|1|I|WARD1^BED2^ROOM3^RXX01&1.2.3&ISO||||C123^DOCTOR^DAVE",
        r"ZXY|1|local^extension",
    ]
)

#: An ADT^A03 in HL7 2.3 with CRLF line ends.
ADT_A03_23 = "\r\n".join(
    [
        r"MSH|^~\&|OLDPAS|RXX03|CAREBUS|RYY02|199901011200||ADT^A03|CTRL-23|P|2.3",
        r"EVN|A03|199901011200",
        r"PID|1||M000123^^^RXX03^MR||SMITH^JOHN||19500505|M",
        "PV1|1|I" + "|" * 17 + "V001" + "|" * 18 + "79",
        "",
    ]
)
