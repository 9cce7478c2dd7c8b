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

Each child says :data:`READY` on its channel once its producer runs; the parent
binds the port only when every child is ready. A child reads end-of-file on its
channel when the parent is gone (even killed), and then stops: no orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import zlib
from collections.abc import Callable, Sequence

from carebus.log import get_logger
from carebus.settings import MllpSettings

log = get_logger(__name__)

#: What a child sends its parent once it can take connections.
READY = b"R"
_HANDOVER = b"C"


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

    def __init__(self, settings: MllpSettings, channels: Sequence[socket.socket]) -> None:
        self._settings = settings
        self._channels = list(channels)
        self._homes = ChildMap(len(self._channels))
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self.handed_over = [0] * len(self._channels)

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
        for channel in self._channels:
            channel.setblocking(False)
        self._task = asyncio.create_task(self._accept(self._sock), name="mllp-dispatcher")
        log.info("mllp listening", host=s.host, port=self.port, processes=len(self._channels))

    async def stop(self) -> None:
        """Stop accepting and release the port."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. out of file descriptors: try again shortly
                log.warning("mllp accept failed", error=type(exc).__name__)
                await asyncio.sleep(0.1)
                continue
            with conn:
                self.hand_over(conn, str(address[0]))

    def hand_over(self, conn: socket.socket, host: str) -> bool:
        """Pass ``conn`` to its child; False (the caller closes it) when that fails."""
        index = self._homes.child(host)
        try:
            socket.send_fds(self._channels[index], [_HANDOVER], [conn.fileno()])
        except OSError as exc:  # the child is gone or not keeping up
            log.warning(
                "mllp connection refused",
                reason="hand-over-failed",
                peer=host,
                child=index,
                error=type(exc).__name__,
            )
            return False
        self.handed_over[index] += 1
        return True


class Receiver:
    """A child's side: take handed-over sockets; notice when the parent is gone."""

    def __init__(
        self,
        channel: socket.socket,
        adopt: Callable[[socket.socket], None],
        parent_gone: Callable[[], None],
    ) -> None:
        self._channel = channel
        self._adopt = adopt
        self._parent_gone = parent_gone
        self._watching = False

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
        self._channel.close()

    def _readable(self) -> None:
        while True:
            try:
                data, fds, _flags, _address = socket.recv_fds(self._channel, 16, 1)
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
            for fd in fds:
                self._adopt(socket.socket(fileno=fd))
