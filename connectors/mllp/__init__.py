"""MLLP ingest: the asyncio listener, HL7 acknowledgements, TLS and the sender allow-list.

``server.MllpServer`` reads frames and answers them in order; ``ack`` builds the
ACKs (pure); ``allowlist`` says which peer may send as which facility; ``tls`` makes
the listener's TLS context.
"""
