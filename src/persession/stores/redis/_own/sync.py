"""Blocking connections: :class:`SyncPool`, thread-safe and fork-aware, and the connections it holds."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from typing import Any, Final

from .address import Address
from .errors import Timeout, Unreachable, _check_handshake, _unreachable
from .wire import _RECV, Arg, Command, pack, reader

# Bumped in every forked child: a pool made before the fork sees it changed (a global read,
# where os.getpid() would be a system call on every command).
_forks = 0


def _forked() -> None:
    global _forks  # one int, replaced whole
    _forks += 1


os.register_at_fork(after_in_child=_forked)


def fork_count() -> int:
    """How many forks this process is from the one that imported this module (0 in that one)."""
    return _forks


def _timeval(seconds: float | None) -> bytes:
    """A ``struct timeval`` for SO_RCVTIMEO and SO_SNDTIMEO: zero (no timeout) for ``None``."""
    micros = 0 if seconds is None else max(1, round(seconds * 1_000_000))  # a positive timeout never reads as none
    return struct.pack("ll", micros // 1_000_000, micros % 1_000_000)


#: Where SO_RCVTIMEO and SO_SNDTIMEO take a ``struct timeval`` (Windows takes milliseconds: Python's timeout there).
_KERNEL_TIMEOUTS: Final = sys.platform.startswith(("linux", "darwin", "freebsd"))


class _SyncConnection:
    def __init__(
        self, address: Address, setup: Sequence[tuple[Arg, ...]] = (), preloads: Sequence[tuple[Arg, ...]] = ()
    ) -> None:
        self.address = address
        self.forks = _forks
        self.generation = 0
        self._reader = reader()
        try:
            if address.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(address.connect_timeout)
                sock.connect(address.path)
            else:
                sock = socket.create_connection((address.host, address.port), timeout=address.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if address.ssl_context is not None:
                    sock = address.ssl_context.wrap_socket(sock, server_hostname=address.host)
        except TimeoutError as error:
            raise Timeout(f"timed out connecting to Redis at {address.describe()}") from error
        except OSError as error:  # includes ssl.SSLError
            raise _unreachable(address.describe(), error) from error
        if address.ssl_context is None and _KERNEL_TIMEOUTS:
            # A blocking socket with the timeout in the kernel (SO_RCVTIMEO, SO_SNDTIMEO): Python's own
            # timeout polls before every send and receive, two more system calls per round trip.
            sock.settimeout(None)
            timeout = _timeval(address.socket_timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
        else:
            sock.settimeout(address.socket_timeout)
        self._sock = sock
        handshake = [*address.handshake(), *setup]
        if handshake or preloads:
            try:
                # The preloads' replies are not checked: a server that refuses SCRIPT LOAD still serves.
                _check_handshake(self.execute([*handshake, *preloads])[: len(handshake)])
            except BaseException:
                self.close()
                raise

    def execute(self, commands: Sequence[Command]) -> list[Any]:
        self.send(commands)
        return self.receive(len(commands))

    def send(self, commands: Sequence[Command]) -> None:
        try:
            self._sock.sendall(pack(commands))
        except (TimeoutError, BlockingIOError) as error:  # BlockingIOError: SO_SNDTIMEO ran out
            raise Timeout(f"Redis at {self.address.describe()} did not take the commands in time") from error
        except OSError as error:
            raise _unreachable(self.address.describe(), error) from error

    def receive(self, count: int) -> list[Any]:
        try:
            replies: list[Any] = []
            while len(replies) < count:
                reply = self._reader.gets()
                if reply is False:
                    data = self._sock.recv(_RECV)
                    if not data:
                        raise Unreachable(f"Redis at {self.address.describe()} closed the connection")
                    self._reader.feed(data)
                else:
                    replies.append(reply)
            return replies
        except (TimeoutError, BlockingIOError) as error:  # BlockingIOError: SO_RCVTIMEO ran out
            raise Timeout(f"Redis at {self.address.describe()} did not answer in time") from error
        except OSError as error:
            raise _unreachable(self.address.describe(), error) from error

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


class Sent:
    """Commands :meth:`SyncPool.send` wrote, on the connection their replies will come on."""

    __slots__ = ("attempt", "commands", "connection")

    def __init__(self, commands: Sequence[Command], connection: _SyncConnection | None) -> None:
        self.commands = commands
        #: ``None`` until :meth:`SyncPool._write` opens one (none was idle), and after a failure.
        self.connection = connection
        self.attempt = 0


class SyncPool:
    """Blocking connections for threads: see the package docs (:mod:`persession.stores.redis._own`)."""

    def __init__(self, address: Address) -> None:
        self.address = address
        #: Commands every new connection sends after the address' handshake (client-side caching's
        #: CLIENT TRACKING); changing them with :meth:`renew` retires the connections made before.
        self.setup: tuple[tuple[Arg, ...], ...] = ()
        #: Commands every new connection sends after that, whose replies are not checked (the stores'
        #: SCRIPT LOADs, so a fresh server never answers NOSCRIPT), in the same round trip.
        self.preloads: tuple[tuple[Arg, ...], ...] = ()
        self._setup()
        self._closed = False

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._idle: list[_SyncConnection] = []
        self._busy = 0
        self._forks = _forks
        self._generation = 0

    def renew(self, setup: tuple[tuple[Arg, ...], ...]) -> None:
        """Make connections with ``setup`` from now on; close the idle ones, and busy ones when they come back."""
        with self._lock:
            self.setup = setup
            self._generation += 1
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def preload(self, commands: tuple[tuple[Arg, ...], ...]) -> None:
        """Have every connection made from now on send ``commands`` when it opens (see :attr:`preloads`)."""
        self.preloads = commands

    def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one write and return their replies (error replies as ReplyError)."""
        return self.receive(self.send(commands))

    def send(self, commands: Sequence[Command]) -> Sent:
        """Send ``commands`` in one write on a connection of the pool, and keep it for :meth:`receive`.

        Call :meth:`receive` with the result exactly once, from any point of the same thread's work:
        until then the connection is out of the pool (Redis answers at once; the answer waits in the
        socket).
        """
        if self._forks != _forks:
            # A forked child: the parent's idle sockets are the parent's connections. Closing the
            # child's copies of them leaves the parent's open (only shutdown() would end them).
            for inherited in self._idle:
                inherited.close()
            self._setup()
        sent = Sent(commands, self._checkout())
        try:
            self._write(sent)
        except BaseException:
            self._checkin(None)
            raise
        return sent

    def receive(self, sent: Sent) -> list[Any]:
        """The replies to the commands :meth:`send` sent; the connection goes back to the pool."""
        try:
            while True:
                connection = sent.connection
                assert connection is not None  # noqa: S101  (_write leaves one, or raised)
                try:
                    return connection.receive(len(sent.commands))
                except (Unreachable, Timeout) as error:
                    self._fail(sent, error)
                    self._write(sent)  # sends again on a fresh connection, or raises when out of retries
                except BaseException:
                    connection.close()
                    sent.connection = None
                    raise
        finally:
            self._checkin(sent.connection)

    def _write(self, sent: Sent) -> None:
        """Write ``sent``'s commands, on a fresh connection after a failure (up to ``retries`` times)."""
        while True:
            connection = sent.connection
            if connection is None:
                generation, setup = self._generation, self.setup
                connection = sent.connection = _SyncConnection(self.address, setup, self.preloads)
                connection.generation = generation
            try:
                connection.send(sent.commands)
                return
            except (Unreachable, Timeout) as error:
                self._fail(sent, error)
            except BaseException:
                connection.close()
                sent.connection = None
                raise

    def _fail(self, sent: Sent, error: Unreachable | Timeout) -> None:
        """The connection of ``sent`` failed with ``error``: close it, and raise that unless a retry is left."""
        assert sent.connection is not None  # noqa: S101
        sent.connection.close()
        sent.connection = None
        self._drop_idle()  # after a restart they are all stale: a retry takes a new connection
        if sent.attempt >= self.address.retries:
            raise error
        sent.attempt += 1

    def _checkout(self) -> _SyncConnection | None:
        """Take a slot (waiting up to ``pool_timeout`` when all are busy) and an idle connection if any."""
        address = self.address
        with self._lock:
            if self._busy >= address.max_connections and not self._freed.wait_for(
                lambda: self._busy < address.max_connections or self._closed, address.pool_timeout
            ):
                raise Unreachable(
                    f"all {address.max_connections} connections to Redis at {address.describe()} are busy"
                )
            if self._closed:
                raise Unreachable("the Redis store is closed")
            self._busy += 1
            return self._idle.pop() if self._idle else None

    def _checkin(self, connection: _SyncConnection | None) -> None:
        with self._lock:
            self._busy -= 1
            if (
                connection is not None
                and not self._closed
                and connection.forks == self._forks
                and connection.generation == self._generation
            ):
                self._idle.append(connection)
                connection = None
            self._freed.notify()
        if connection is not None:
            connection.close()

    def _drop_idle(self) -> None:
        """Close the idle connections: one failed, so the others (as old or older) likely did too."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def close(self) -> None:
        """Close the idle connections; busy ones are closed when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._freed.notify_all()
        for connection in idle:
            connection.close()
