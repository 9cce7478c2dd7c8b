"""Ports for the servers a benchmark starts."""

from __future__ import annotations

import random
import socket

#: Ports handed out in this process, so that no two servers are given the same one.
_GIVEN: set[int] = set()


def free_port(run: int = 1) -> int:
    """A free port p (with p .. p + run - 1 free), below the ephemeral port range: a
    port from that range can be taken by any outgoing connection (a producer's to
    Kafka) before the server it was meant for binds it."""
    low = _ephemeral_low()
    for _ in range(200):
        base = random.randrange(10000, low - run)
        ports = range(base, base + run)
        if _GIVEN.intersection(ports):
            continue
        socks = []
        try:
            for port in ports:
                socks.append(socket.socket())
                socks[-1].bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        _GIVEN.update(ports)
        return base
    raise RuntimeError("no free ports")


def _ephemeral_low() -> int:
    """The lowest port Linux picks for outgoing connections (32768 when unknown)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
