"""Cheaper cyclic garbage collection for long-running carebus processes."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Make the cyclic garbage collector cheaper for a long-running stream process.

    Call once start-up is done. Everything loaded by then (modules, schemas, the
    app) is frozen out of collection, and young collections run less often: each
    message or event allocates hundreds of short-lived objects that reference
    counting frees anyway, and every collection otherwise walks the process's
    long-lived objects again.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
