"""carebus: HL7 v2 feeds in, Avro care events on Kafka, coordination alerts out."""

__version__ = "0.1.0"
