"""Kafka's default partitioning of keyed records, cheaper per record than aiokafka's.

A keyed record goes to partition ``murmur2(key) & 0x7fffffff`` modulo the topic's
partition count: Kafka's Java client, librdkafka's ``murmur2_random`` and aiokafka
all agree, so every producer of a topic puts a patient's events on the same
partition. aiokafka computes murmur2 one byte at a time in Python, twice per
message on the listener's hot path (the raw record and the event). :func:`murmur2`
reads the key four bytes at a time, and :func:`partition_for` remembers the hash of
recent keys (a feed repeats its patients).
"""

from __future__ import annotations

import functools
import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = struct.Struct("<I")
#: How many recent keys' hashes are remembered.
MEMO_SIZE = 16_384


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 of ``data`` (unsigned, as aiokafka's ``murmur2`` returns it)."""
    length = len(data)
    h = _SEED ^ length
    end = length & ~3
    m = _M
    for (word,) in _WORDS.iter_unpack(data[:end]):
        k = (word * m) & _MASK
        k ^= k >> 24
        h = ((h * m) & _MASK) ^ ((k * m) & _MASK)
    extra = length & 3
    if extra:
        if extra == 3:
            h ^= data[end + 2] << 16
        if extra >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * m) & _MASK
    h ^= h >> 13
    h = (h * m) & _MASK
    return h ^ (h >> 15)


@functools.lru_cache(maxsize=MEMO_SIZE)
def _positive_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``partitions`` (numbered from 0) that Kafka's default gives ``key``.

    The hash of up to :data:`MEMO_SIZE` recent keys is remembered.
    """
    return _positive_hash(key) % partitions
