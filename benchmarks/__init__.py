"""carebus benchmarks: run them all with ``python -m benchmarks``, one with ``python -m benchmarks NAME``."""
