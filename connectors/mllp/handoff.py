"""Several listener processes: a parent accepts MLLP connections, children serve them.

With ``mllp.processes`` over 1, ``carebus listen`` binds the MLLP port in a parent
process (:class:`Dispatcher`) and starts that many children, each with its own
producer, pipeline and duplicate window. The parent accepts each connection and
passes the socket (``SCM_RIGHTS`` over a Unix ``SOCK_SEQPACKET`` socketpair) to the
child of the peer's IP address (:class:`ChildMap`): a new address goes to the child
serving the fewest addresses, and stays with it. One interface engine's connections,
and so its resends, always reach the same child, whose in-memory duplicate window
therefore still holds.

Limit: a facility that sends from two hosts (two engines, or an engine that fails
over to another address) may reach two children, and a resend that crosses over
is published again (consumers can drop the copy: event ids are deterministic).
Behind NAT or a proxy every peer has the same address and one child serves them
all: run one process per listener there, and several listeners instead.

Per-IP connection cap (``mllp.max_connections_per_ip``): the parent counts each
address's open connections across all children and closes a connection over the
cap at once, before any hand-over. The hand-over message carries the peer address;
the child sends it back (:data:`RELEASED`) when that connection is over, however it
ended, and the parent's count goes down. A RELEASED message that finds the channel
full waits, in order, and goes when the channel is writable again: never dropped.
(Each child also enforces the cap on what it serves, and an address always
reaches the same child, so the per-IP rate limit of that child is the address's
limit across the listener.)

Each child says :data:`READY` on its channel once its producer runs; the parent
binds the port only when every child is ready. A child reads end-of-file on its
channel when the parent is gone (even killed), and then stops: no orphans.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import socket
import zlib
from collections.abc import Callable, Sequence
from typing import Protocol

from carebus.log import get_logger
from carebus.settings import MllpSettings
from connectors.mllp.server import LogThrottle, accepted

log = get_logger(__name__)

#: What a child sends its parent once it can take connections.
READY = b"R"
#: What a child sends back, followed by the peer address, when a connection is over.
RELEASED = b"D"
_HANDOVER = b"C"
_MESSAGE_BYTES = 512


class RefusalObserver(Protocol):
    """Told when the parent refuses a connection (:class:`carebus.metrics.Metrics` is one)."""

    def connection_refused(self, reason: str) -> None: ...


#: ``adopt(sock, released)``: serve ``sock``; call ``released`` once it is over.
Adopt = Callable[[socket.socket, Callable[[], None]], None]


#: Peer addresses whose child is remembered; beyond it, new ones are hashed.
MAX_HOSTS = 65_536


def child_for(host: str, children: int) -> int:
    """A child for peers at IP address ``host`` by hash (stable across runs and processes)."""
    return zlib.crc32(host.encode("ascii", "replace")) % children


class ChildMap:
    """Which child serves each peer address: the same one for as long as the parent runs.

    A new address goes to the child serving the fewest addresses (the lowest-numbered
    on a tie), so that a few engines spread evenly, where a hash may well give one
    child twice the other's. Beyond :data:`MAX_HOSTS` remembered addresses, new ones
    are placed by :func:`child_for`.
    """

    def __init__(self, children: int) -> None:
        self._homes: dict[str, int] = {}
        self._hosts = [0] * children

    def child(self, host: str) -> int:
        """The child serving ``host``."""
        index = self._homes.get(host)
        if index is None:
            if len(self._homes) >= MAX_HOSTS:
                return child_for(host, len(self._hosts))
            index = self._hosts.index(min(self._hosts))
            self._homes[host] = index
            self._hosts[index] += 1
        return index


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A parent end and a child end for handing over connections."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class Dispatcher:
    """The parent's side: accept on the MLLP port, hand each socket to a child."""

    def __init__(
        self,
        settings: MllpSettings,
        channels: Sequence[socket.socket],
        observer: RefusalObserver | None = None,
    ) -> None:
        self._settings = settings
        self._channels = list(channels)
        self._homes = ChildMap(len(self._channels))
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._observer = observer
        self._watching: list[int] = []
        #: Connections open per peer address, across all children.
        self._per_ip: dict[str, int] = {}
        self._refusals_logged = LogThrottle()
        self.handed_over = [0] * len(self._channels)

    def connections_from(self, host: str) -> int:
        """Connections from ``host`` handed over and not yet released by their child."""
        return self._per_ip.get(host, 0)

    @property
    def port(self) -> int:
        """The port listened on."""
        if self._sock is None:
            raise RuntimeError("the dispatcher is not started")
        return int(self._sock.getsockname()[1])

    @property
    def listening(self) -> bool:
        """True while the port is bound and connections are accepted."""
        return self._sock is not None and self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Bind the MLLP port and start accepting."""
        s = self._settings
        self._sock = socket.create_server(
            (s.host, s.port), backlog=max(128, s.max_connections), reuse_port=False
        )
        self._sock.setblocking(False)
        loop = asyncio.get_running_loop()
        for channel in self._channels:
            channel.setblocking(False)
            loop.add_reader(channel.fileno(), self._readable, channel)
            self._watching.append(channel.fileno())
        self._task = asyncio.create_task(self._accept(self._sock), name="mllp-dispatcher")
        log.info("mllp listening", host=s.host, port=self.port, processes=len(self._channels))

    async def stop(self) -> None:
        """Stop accepting and release the port."""
        loop = asyncio.get_running_loop()
        for fd in self._watching:
            loop.remove_reader(fd)
        self._watching = []
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _accept(self, listener: socket.socket) -> None:
        async for conn, host in accepted(listener):
            with conn:
                self.hand_over(conn, host)

    def hand_over(self, conn: socket.socket, host: str) -> bool:
        """Pass ``conn`` to its child; False (the caller closes it) when that is refused
        (the address is at its connection cap) or fails."""
        cap = self._settings.max_connections_per_ip
        if cap and self._per_ip.get(host, 0) >= cap:
            left_out = self._refusals_logged.allow()
            if left_out is not None:
                log.warning(
                    "mllp connection refused",
                    reason="ip-connection-limit",
                    peer=host,
                    not_logged=left_out,
                )
            self._refused("ip-connection-limit")
            return False
        index = self._homes.child(host)
        message = _HANDOVER + host.encode("ascii", "replace")[: _MESSAGE_BYTES - 1]
        try:
            socket.send_fds(self._channels[index], [message], [conn.fileno()])
        except OSError as exc:  # the child is gone or not keeping up
            log.warning(
                "mllp connection refused",
                reason="hand-over-failed",
                peer=host,
                child=index,
                error=type(exc).__name__,
            )
            self._refused("hand-over-failed")
            return False
        self._per_ip[host] = self._per_ip.get(host, 0) + 1
        self.handed_over[index] += 1
        return True

    def _refused(self, reason: str) -> None:
        if self._observer is not None:
            self._observer.connection_refused(reason)

    def _readable(self, channel: socket.socket) -> None:
        """Take the children's :data:`RELEASED` messages (end-of-file is the child's
        exit, which the parent notices by the process)."""
        while True:
            try:
                data = channel.recv(_MESSAGE_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                asyncio.get_running_loop().remove_reader(channel.fileno())
                with contextlib.suppress(ValueError):
                    self._watching.remove(channel.fileno())
                return
            if data[:1] == RELEASED:
                self.released(data[1:].decode("ascii", "replace"))

    def released(self, host: str) -> None:
        """A connection from ``host`` is over."""
        left = self._per_ip.get(host, 0) - 1
        if left > 0:
            self._per_ip[host] = left
        else:
            self._per_ip.pop(host, None)


class Receiver:
    """A child's side: take handed-over sockets; notice when the parent is gone."""

    def __init__(
        self,
        channel: socket.socket,
        adopt: Adopt,
        parent_gone: Callable[[], None],
    ) -> None:
        self._channel = channel
        self._adopt = adopt
        self._parent_gone = parent_gone
        self._watching = False
        #: RELEASED messages the channel had no room for yet, sent when it is writable.
        self._unsent: collections.deque[bytes] = collections.deque()

    def start(self) -> None:
        """Watch the channel (from now on, end-of-file calls ``parent_gone``)."""
        self._channel.setblocking(False)
        asyncio.get_running_loop().add_reader(self._channel.fileno(), self._readable)
        self._watching = True

    def ready(self) -> None:
        """Tell the parent this child takes connections now."""
        self._channel.send(READY)

    def stop(self) -> None:
        """Stop watching and close the channel."""
        if self._watching:
            asyncio.get_running_loop().remove_reader(self._channel.fileno())
            self._watching = False
        if self._unsent:
            asyncio.get_running_loop().remove_writer(self._channel.fileno())
            self._unsent.clear()
        self._channel.close()

    def _readable(self) -> None:
        while True:
            try:
                data, fds, _flags, _address = socket.recv_fds(self._channel, _MESSAGE_BYTES, 1)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("mllp hand-over channel failed", error=type(exc).__name__)
                data, fds = b"", []
            if not data and not fds:
                asyncio.get_running_loop().remove_reader(self._channel.fileno())
                self._watching = False
                log.info("mllp parent process gone; stopping")
                self._parent_gone()
                return
            host = data[1:] if data[:1] == _HANDOVER else b""
            for fd in fds:
                self._adopt(socket.socket(fileno=fd), functools.partial(self._release, host))

    def _release(self, host: bytes) -> None:
        """Tell the parent a connection from ``host`` is over.

        When the channel has no room (the parent is not reading fast enough), the
        message waits in order and goes as soon as the channel is writable: a lost
        one would leave the parent counting a connection that is gone, and an honest
        address could stay refused at its cap.
        """
        if self._channel.fileno() < 0:
            return  # stopped: the parent is going too
        self._unsent.append(RELEASED + host)
        if len(self._unsent) == 1:
            self._flush()

    @property
    def unsent(self) -> int:
        """RELEASED messages waiting for room on the channel."""
        return len(self._unsent)

    def _flush(self) -> None:
        """Send the waiting RELEASED messages, in order, until the channel is full."""
        loop = asyncio.get_running_loop()
        fd = self._channel.fileno()
        if fd < 0:
            self._unsent.clear()
            return
        while self._unsent:
            try:
                self._channel.send(self._unsent[0])
            except (BlockingIOError, InterruptedError):
                loop.add_writer(fd, self._flush)  # again once there is room
                return
            except OSError as exc:  # the parent is gone: nobody left to tell
                log.info("mllp release not sent", error=type(exc).__name__, dropped=self.unsent)
                self._unsent.clear()
                break
            self._unsent.popleft()
        loop.remove_writer(fd)
