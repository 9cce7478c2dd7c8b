"""Connectors: HL7 v2 in (MLLP, files, HTTP), translated to care events, published on Kafka."""
