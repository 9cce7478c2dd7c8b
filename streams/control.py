"""Messages the workers send themselves on the internal control topic.

The control topic (``{app_id}-control``) has as many partitions as the events
topic and is consumed by the same agent, so a message sent to partition ``p``
reaches whichever worker owns the events of partition ``p``:

- :class:`Tick`: the wall clock, sent by the owner of a partition to itself every
  ``worker.tick_interval_s`` once it has read every event written before.
- :class:`MergeRequest`: an ``ADT^A40`` named a retired key owned by another
  partition; its owner must hand the retired state over.
- :class:`StateMove`: the retired patient's state, on its way to the survivor.
- :class:`Forwarded`: an event keyed by a retired key, on its way to the survivor.

Values are small JSON objects; :func:`partition_for` is Kafka's default (murmur2)
partitioner, the one every carebus producer uses for patient keys.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import murmur2


@dataclass(frozen=True, slots=True)
class Tick:
    """The wall clock, in epoch microseconds, for one partition."""

    now: int


@dataclass(frozen=True, slots=True)
class MergeRequest:
    """Hand the state of ``retired`` over to ``survivor``, and alias ``retired`` to it."""

    retired: str
    survivor: str


@dataclass(frozen=True, slots=True)
class StateMove:
    """The state of ``retired`` (None when nothing was known), for ``survivor`` to absorb."""

    retired: str
    survivor: str
    state: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Forwarded:
    """An event (its Avro bytes) that arrived under a retired key, for ``target``."""

    target: str
    value: bytes
    hops: int


ControlMessage = Tick | MergeRequest | StateMove | Forwarded


class BadControlMessage(ValueError):
    """A control topic record that is not one of the messages above."""


def encode(message: ControlMessage) -> bytes:
    """The JSON bytes of ``message``."""
    body: dict[str, Any]
    if isinstance(message, Tick):
        body = {"type": "tick", "now": message.now}
    elif isinstance(message, MergeRequest):
        body = {"type": "merge", "retired": message.retired, "survivor": message.survivor}
    elif isinstance(message, StateMove):
        body = {
            "type": "move",
            "retired": message.retired,
            "survivor": message.survivor,
            "state": message.state,
        }
    else:
        body = {
            "type": "forward",
            "target": message.target,
            "value": base64.b64encode(message.value).decode("ascii"),
            "hops": message.hops,
        }
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def decode(data: bytes) -> ControlMessage:
    """The message in ``data``; raises :class:`BadControlMessage`."""
    try:
        body = json.loads(data)
        kind = body["type"]
        if kind == "tick":
            return Tick(int(body["now"]))
        if kind == "merge":
            return MergeRequest(str(body["retired"]), str(body["survivor"]))
        if kind == "move":
            state = body["state"]
            if state is not None and not isinstance(state, dict):
                raise TypeError("state")
            return StateMove(str(body["retired"]), str(body["survivor"]), state)
        if kind == "forward":
            value = base64.b64decode(body["value"], validate=True)
            return Forwarded(str(body["target"]), value, int(body["hops"]))
    except (ValueError, TypeError, KeyError) as exc:
        raise BadControlMessage(f"unreadable control message: {type(exc).__name__}") from None
    raise BadControlMessage("unknown control message type")


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``."""
    return (int(murmur2(key.encode("utf-8"))) & 0x7FFFFFFF) % partitions
