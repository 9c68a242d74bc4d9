"""asyncio: :class:`AsyncMux`, one pipelined connection per event loop that every task shares."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .address import Address
from .errors import ProtocolError, Timeout, Unreachable, _check_handshake, _unreachable
from .wire import Arg, Command, pack, reader

# -- asyncio ------------------------------------------------------------------------------------------


class _Pending:
    __slots__ = ("count", "deadline", "future", "queue", "replies")

    def __init__(
        self, future: asyncio.Future[list[Any]], count: int, deadline: float, queue: asyncio.Queue[Any] | None = None
    ) -> None:
        self.future = future
        self.count = count
        self.deadline = deadline
        self.replies: list[Any] = []
        #: A subscription: every reply goes here, and the entry never completes.
        self.queue = queue


class _MuxProtocol(asyncio.Protocol):
    """One connection's state: the batches waiting for replies, in the order they were written.

    Writes are coalesced: the commands of every task that sends during one
    turn of the event loop go out in one ``write`` at the end of it, so
    concurrent requests share a system call as well as the connection. One
    watchdog timer (not one per command) fails the connection when the oldest
    batch is past its deadline.
    """

    def __init__(self, address: Address) -> None:
        self.address = address
        self.reader = reader()
        self.pending: collections.deque[_Pending] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self._out: list[bytes] = []
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream connection's is a Transport

    def send(self, commands: Sequence[Command], queue: asyncio.Queue[Any] | None = None) -> asyncio.Future[list[Any]]:
        loop = self._loop
        future: asyncio.Future[list[Any]] = loop.create_future()
        if self.lost is not None or self.transport is None or self.transport.is_closing():
            future.set_exception(Unreachable(f"connection to Redis at {self.address.describe()} lost"))
            return future
        timeout = self.address.socket_timeout
        deadline = math.inf if timeout is None or queue is not None else loop.time() + timeout
        self.pending.append(_Pending(future, len(commands), deadline, queue))
        if not self._out:
            loop.call_soon(self._flush)
        self._out.append(pack(commands))
        if timeout is not None and self._watchdog is None and queue is None:
            self._watchdog = loop.call_later(timeout / 4, self._watch)
        return future

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self.lost is None and self.transport is not None:
            self.transport.write(b"".join(out))

    def _watch(self) -> None:
        self._watchdog = None
        if not self.pending or self.lost is not None:
            return
        if self.pending[0].deadline <= self._loop.time():
            self.fail(Timeout(f"Redis at {self.address.describe()} did not answer in time"))
            return
        timeout = self.address.socket_timeout
        if timeout is not None and self.pending[0].queue is None:
            self._watchdog = self._loop.call_later(timeout / 4, self._watch)

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
            while self.pending:
                reply = self.reader.gets()
                if reply is False:
                    return
                entry = self.pending[0]
                if entry.queue is not None:
                    entry.queue.put_nowait(reply)
                    continue
                entry.replies.append(reply)
                if len(entry.replies) == entry.count:
                    self.pending.popleft()
                    if not entry.future.done():
                        entry.future.set_result(entry.replies)
        except ProtocolError as error:
            self.fail(error)
            return
        if self.reader.gets() is not False:  # a reply nobody asked for: the stream is out of step
            self.fail(ProtocolError(f"unexpected reply from Redis at {self.address.describe()}"))

    def connection_lost(self, exc: Exception | None) -> None:
        reason = exc or EOFError("closed by the server")
        self.fail(Unreachable(f"connection to Redis at {self.address.describe()} lost: {reason}"))

    def fail(self, error: BaseException) -> None:
        """Fail every waiting batch with ``error`` and drop the connection: its replies are out of step."""
        if self.lost is None:
            self.lost = error
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        pending, self.pending = self.pending, collections.deque()
        self._out = []
        for entry in pending:
            if entry.queue is not None:  # nobody awaits a subscription's future
                entry.future.cancel()
            elif not entry.future.done():
                entry.future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()


def _discard(protocol: _MuxProtocol) -> None:
    """Drop a connection of another event loop: abort it, or when that loop is closed, shut its socket down."""
    transport = protocol.transport
    if transport is None:
        return
    try:
        transport.abort()
    except RuntimeError:  # its loop is closed: the server must still see the connection end
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Mark the outcome as seen: when every caller was cancelled, nobody else will.
    if not task.cancelled():
        task.exception()


class AsyncMux:
    """One shared, pipelined connection per event loop: see the package docs (:mod:`persession.stores.redis._own`)."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._protocol: _MuxProtocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Future[_MuxProtocol] | None = None
        self._closed = False
        #: Commands every new connection sends after the address' handshake (client-side caching's
        #: CLIENT TRACKING); whoever changes them sends them on the live connection too.
        self.setup: tuple[tuple[Arg, ...], ...] = ()
        #: Commands every new connection sends after that, whose replies are not checked (the stores'
        #: SCRIPT LOADs), in the same round trip.
        self.preloads: tuple[tuple[Arg, ...], ...] = ()

    def preload(self, commands: tuple[tuple[Arg, ...], ...]) -> None:
        """Have every connection made from now on send ``commands`` when it opens (see :attr:`preloads`)."""
        self.preloads = commands

    async def renew(self, setup: tuple[tuple[Arg, ...], ...]) -> list[Any]:
        """Make ``setup`` what new connections send, and send it on the live one now: its replies."""
        self.setup = setup
        return await self.execute(setup)

    async def _open(self) -> tuple[asyncio.Transport, _MuxProtocol]:
        loop = asyncio.get_running_loop()
        address = self.address
        try:
            if address.path is not None:
                opening = loop.create_unix_connection(lambda: _MuxProtocol(address), address.path)
            else:
                opening = loop.create_connection(
                    lambda: _MuxProtocol(address),
                    address.host or "",
                    address.port,
                    ssl=address.ssl_context,
                    server_hostname=address.host if address.ssl_context is not None else None,
                )
            transport, protocol = await asyncio.wait_for(opening, address.connect_timeout)
        except asyncio.TimeoutError as error:
            raise Timeout(f"timed out connecting to Redis at {address.describe()}") from error
        except OSError as error:
            raise _unreachable(address.describe(), error) from error
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return transport, protocol

    async def _connect(self) -> _MuxProtocol:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a store used from a new loop starts afresh there
            if self._protocol is not None:
                _discard(self._protocol)
            self._loop, self._protocol, self._connecting = loop, None, None
        if self._connecting is None:
            # A task of its own, shared by every caller: cancelling one caller cancels only its wait.
            self._connecting = loop.create_task(self._establish())
            self._connecting.add_done_callback(_retrieve)
        return await asyncio.shield(self._connecting)

    async def _establish(self) -> _MuxProtocol:
        try:
            _, protocol = await self._open()
            handshake = [*self.address.handshake(), *self.setup]
            preloads = self.preloads
            if handshake or preloads:
                try:
                    # The preloads' replies are not checked: a server that refuses SCRIPT LOAD still serves.
                    _check_handshake((await protocol.send([*handshake, *preloads]))[: len(handshake)])
                except BaseException:
                    protocol.fail(Unreachable("handshake failed"))
                    raise
            if self._closed:  # aclose() was called while this connected
                protocol.fail(Unreachable("the Redis store is closed"))
                raise Unreachable("the Redis store is closed")
            self._protocol = protocol
            return protocol
        finally:
            self._connecting = None

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one write and return their replies (error replies as ReplyError)."""
        attempt = 0
        while True:
            if self._closed:
                raise Unreachable("the Redis store is closed")
            protocol = self._protocol
            if protocol is None or protocol.lost is not None or self._loop is not asyncio.get_running_loop():
                protocol = await self._connect()
            try:
                return await protocol.send(commands)
            except (Unreachable, Timeout):
                if self._protocol is protocol:
                    self._protocol = None
                if attempt >= self.address.retries:
                    raise
                attempt += 1

    async def subscribe(self, channel: str, poll: float) -> AsyncIterator[bytes]:
        """The data of each message published on ``channel``, on a connection of its own, until closed.

        Raises :class:`~.errors.Unreachable` when the connection is refused or
        lost (:class:`~.errors.Timeout` when connecting takes too long); wakes
        every ``poll`` seconds without yielding so a cancelled consumer is noticed.
        """
        transport, protocol = await self._open()
        messages: asyncio.Queue[Any] = asyncio.Queue()
        try:
            handshake = self.address.handshake()
            if handshake:
                _check_handshake(await protocol.send(handshake))
            protocol.send([("SUBSCRIBE", channel)], messages)
            while True:
                if protocol.lost is not None:
                    raise protocol.lost
                try:
                    message = await asyncio.wait_for(messages.get(), poll)
                except asyncio.TimeoutError:
                    continue
                if isinstance(message, list) and len(message) == 3 and message[0] == b"message":
                    yield message[2]
        finally:
            transport.abort()

    async def aclose(self) -> None:
        """Close the connection; later commands fail."""
        self._closed = True
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None and self._loop is asyncio.get_running_loop():
            protocol.transport.abort()  # now: a TLS close would wait for the peer, maybe past the loop's end
