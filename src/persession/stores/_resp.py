"""A lean RESP2 client for the Redis stores built from a URL: what they send, and nothing else.

Why not redis-py's own connections? On the request path a session store sends
one or two commands per request, and redis-py spends several times the cost of
the round trip itself around each one (its pool, its per-command timeout
tasks, its parser layers): on a 2-core machine, 100-130 µs of CPU per
``HGETALL`` against 15-25 µs here (see :doc:`/benchmarks`). This module keeps
only what the stores need:

- :class:`SyncPool`: thread-safe, a LIFO of idle sockets, at most
  ``max_connections`` of them (a caller waits up to ``pool_timeout`` for one);
  a forked child never reuses its parent's sockets.
- :class:`AsyncMux`: one connection per event loop that every task shares:
  commands are written as they come and replies matched in order (Redis
  answers in order), so concurrent requests pipeline instead of queueing
  for a pool.
- Both send a batch of commands in one write and read their replies in one
  go (one round trip), parse with ``hiredis`` when it is installed (a pure
  Python parser otherwise), bound every connect and reply by a timeout, and
  retry a batch once on a fresh connection when the connection failed (every
  command the stores send is idempotent).

Errors are redis-py's exception classes, so the stores map them in one place:
a ``-ERR`` reply is a :class:`redis.exceptions.ResponseError` (``NoScriptError``,
``ReadOnlyError``, ``BusyLoadingError``... by prefix), a dead or refused
connection a ``ConnectionError``, a reply later than the timeout a
``TimeoutError``.

Not a general client: no RESP3, no pub/sub beyond :meth:`AsyncMux.subscribe`,
no cluster or sentinel (the stores use redis-py for those).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import re
import socket
import ssl
import struct
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoPermissionError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..exceptions import ConfigError

try:  # pragma: no branch - which one depends on the environment
    import hiredis

    HIREDIS: bool = True
except ImportError:  # pragma: no cover - the suite runs with hiredis; test_resp covers the fallback
    HIREDIS = False

Arg: TypeAlias = bytes | str | int | float
Command: TypeAlias = Sequence[Arg]
# hiredis >= 2.1 encodes commands in C (about 6x faster than pack_python for a merge).
_PACK_COMMAND: Callable[[tuple[Arg, ...]], bytes] | None = getattr(hiredis, "pack_command", None) if HIREDIS else None

#: Options :func:`parse_url` accepts (as keywords or URL query parameters).
OPTIONS: Final = frozenset(
    {
        "db",
        "username",
        "password",
        "client_name",
        "socket_timeout",
        "socket_connect_timeout",
        "max_connections",
        "pool_timeout",
        "retries",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
    }
)
_CERT_REQS: Final = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_ERRORS: Final[tuple[tuple[str, type[RedisError]], ...]] = (
    ("NOSCRIPT", NoScriptError),
    ("READONLY", ReadOnlyError),
    ("LOADING", BusyLoadingError),
    ("NOPERM", NoPermissionError),
)
_AUTH_ERRORS: Final = ("NOAUTH", "WRONGPASS", "invalid username-password", "invalid password")
_RECV: Final = 65536
_INTEGER: Final = re.compile(rb"-?[0-9]+")


@dataclass(frozen=True, slots=True)
class Address:
    """Where a server is and how to talk to it: what :func:`parse_url` makes of a URL and options."""

    host: str | None
    port: int
    path: str | None
    ssl_context: ssl.SSLContext | None
    username: str | None
    password: str | None
    db: int
    client_name: str | None
    connect_timeout: float | None
    socket_timeout: float | None
    max_connections: int
    pool_timeout: float | None
    retries: int

    def describe(self) -> str:
        """``host:port`` or the socket path, never credentials."""
        return self.path if self.path is not None else f"{self.host}:{self.port}"

    def handshake(self) -> list[tuple[Arg, ...]]:
        """The commands a new connection sends first: AUTH, SELECT, CLIENT SETNAME as configured."""
        commands: list[tuple[Arg, ...]] = []
        if self.password is not None:
            auth: tuple[Arg, ...] = ("AUTH", self.password)
            commands.append(auth if self.username is None else ("AUTH", self.username, self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        if self.client_name:
            commands.append(("CLIENT", "SETNAME", self.client_name))
        return commands


def _number(name: str, value: object, kind: type[int] | type[float], *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    number: int | float | None
    try:
        number = kind(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    except ValueError:
        number = None
    if kind is int and isinstance(value, float) and not value.is_integer():
        number = None  # db=2.7 is a mistake, not database 2
    if number is None or number < 0 or not math.isfinite(number):
        raise ConfigError(name, f"{name} must be a non-negative {kind.__name__}, not {value!r}")
    return number


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"1", "true", "yes", "0", "false", "no"}:
        return value.lower() in {"1", "true", "yes"}
    raise ConfigError(name, f"{name} must be true or false, not {value!r}")


def parse_url(url: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> Address:
    """An :class:`Address` from a ``redis://``, ``rediss://`` or ``unix://`` URL.

    ``options`` (keywords) override the URL's query parameters, which override
    ``defaults``. An option outside :data:`OPTIONS` raises :class:`ConfigError`
    saying how to get redis-py's full set instead.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    merged: dict[str, Any] = dict(defaults)
    merged.update(parse_qsl(parts.query, keep_blank_values=True))
    merged.update(options)
    unknown = sorted(set(merged) - OPTIONS)
    if unknown:
        raise ConfigError(
            unknown[0],
            f"unknown Redis option(s) {', '.join(map(repr, unknown))}; "
            f"from_url() accepts {', '.join(sorted(OPTIONS))}. "
            "For any other redis-py option, build the client yourself and pass it: RedisStore(redis.Redis(...))",
        )
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    username = merged.get("username", username) or None
    password = merged.get("password", password)
    if password == "" and username is None:
        password = None
    db_text = merged.get("db", parts.path.strip("/") if scheme != "unix" else None) or 0
    db = _number("db", db_text, int)
    context: ssl.SSLContext | None = None
    if scheme == "rediss":
        try:
            context = ssl.create_default_context(cafile=merged.get("ssl_ca_certs"))
        except OSError as error:  # a missing or unreadable CA file
            raise ConfigError("ssl_ca_certs", f"cannot read the CA certificates: {error}") from None
        check = _flag("ssl_check_hostname", merged.get("ssl_check_hostname", True))
        wanted = merged.get("ssl_cert_reqs", "required")
        reqs = _CERT_REQS.get(wanted.lower()) if isinstance(wanted, str) else wanted
        if not isinstance(reqs, ssl.VerifyMode):
            raise ConfigError("ssl_cert_reqs", "ssl_cert_reqs must be 'none', 'optional' or 'required'")
        context.check_hostname = check and reqs != ssl.CERT_NONE
        context.verify_mode = reqs
        if merged.get("ssl_certfile"):
            try:
                context.load_cert_chain(merged["ssl_certfile"], merged.get("ssl_keyfile"))
            except OSError as error:  # includes ssl.SSLError: a missing file, or a key that does not match
                raise ConfigError("ssl_certfile", f"cannot load the client certificate: {error}") from None
    try:
        port = parts.port or 6379
    except ValueError as error:
        raise ConfigError("url", f"malformed Redis URL: {error}") from None
    return Address(
        host=None if scheme == "unix" else parts.hostname,
        port=port,
        path=unquote(parts.path) if scheme == "unix" else None,
        ssl_context=context,
        username=username,
        password=password,
        db=db,
        client_name=merged.get("client_name") or None,
        connect_timeout=_number("socket_connect_timeout", merged.get("socket_connect_timeout"), float, optional=True),
        socket_timeout=_number("socket_timeout", merged.get("socket_timeout"), float, optional=True),
        max_connections=max(1, _number("max_connections", merged.get("max_connections", 100), int)),
        pool_timeout=_number("pool_timeout", merged.get("pool_timeout"), float, optional=True),
        retries=_number("retries", merged.get("retries", 1), int),
    )


# -- the wire format ----------------------------------------------------------------------------------


def _arg(value: Arg) -> bytes:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value).encode()
    raise TypeError(f"a Redis argument must be bytes, str, int or float, not {type(value).__name__}")


def pack(commands: Sequence[Command]) -> bytes:
    """The RESP encoding of ``commands``, one array of bulk strings each (hiredis' encoder when installed)."""
    if _PACK_COMMAND is not None:
        try:
            return b"".join([_PACK_COMMAND(c if type(c) is tuple else tuple(c)) for c in commands])
        except TypeError:
            pass  # an argument of another type: the pure-Python encoder names it
    return pack_python(commands)


def pack_python(commands: Sequence[Command]) -> bytes:
    """:func:`pack` without hiredis: the same bytes."""
    parts: list[bytes] = []
    append = parts.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for value in command:
            data = value if type(value) is bytes else value.encode() if type(value) is str else _arg(value)
            append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def error_reply(message: str) -> RedisError:
    """The redis-py exception for an error reply: ``NoScriptError`` for ``NOSCRIPT ...`` and so on."""
    if message.startswith(_AUTH_ERRORS):
        return AuthenticationError(message)
    for prefix, kind in _ERRORS:
        if message.startswith(prefix):
            return kind(message)
    return ResponseError(message)


class ProtocolError(RedisConnectionError):
    """The server sent something that is not RESP2: the connection is dropped."""


class PyReader:
    """A pure-Python RESP2 parser with hiredis.Reader's interface: :meth:`feed` bytes, :meth:`gets` replies.

    ``gets()`` returns ``False`` until a whole reply has arrived. Error replies
    are returned (not raised) as :class:`ResponseError`; bulk strings are
    bytes, nil is ``None``.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def gets(self) -> Any:
        try:
            reply, pos = self._parse(self._pos)
        except IndexError:
            return False
        self._pos = pos
        if pos > _RECV:  # drop consumed bytes now and then
            del self._buffer[:pos]
            self._pos = 0
        return reply

    def _line(self, pos: int) -> tuple[bytes, int]:
        end = self._buffer.find(b"\r\n", pos)
        if end < 0:
            raise IndexError
        return bytes(self._buffer[pos:end]), end + 2

    def _parse(self, pos: int) -> tuple[Any, int]:
        if pos >= len(self._buffer):
            raise IndexError
        kind = self._buffer[pos]
        line, pos = self._line(pos + 1)
        if kind == 0x2B:  # +
            return line, pos
        if kind == 0x2D:  # -
            return ResponseError(line.decode("utf-8", "replace")), pos
        if not _INTEGER.fullmatch(line):
            raise ProtocolError(f"not a RESP2 length or integer: {line[:40]!r}")
        number = int(line)
        if kind == 0x3A:  # :
            return number, pos
        if number < -1 and kind in (0x24, 0x2A):
            raise ProtocolError(f"not a RESP2 length: {number}")
        if kind == 0x24:  # $
            if number < 0:
                return None, pos
            end = pos + number
            if len(self._buffer) < end + 2:
                raise IndexError
            if self._buffer[end : end + 2] != b"\r\n":
                raise ProtocolError("a RESP2 bulk string longer than its length")
            return bytes(self._buffer[pos:end]), end + 2
        if kind == 0x2A:  # *
            if number < 0:
                return None, pos
            items = []
            for _ in range(number):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        raise ProtocolError(f"not a RESP2 reply type: {bytes([kind])!r}")


def reader() -> Any:
    """hiredis' reader when installed, else :class:`PyReader`; error replies come back as ResponseError."""
    if HIREDIS:
        return hiredis.Reader(replyError=ResponseError, protocolError=ProtocolError)
    return PyReader()  # pragma: no cover - see HIREDIS


def _check_handshake(replies: Sequence[Any]) -> None:
    for reply in replies:
        if isinstance(reply, ResponseError):
            error = error_reply(str(reply))
            if isinstance(error, AuthenticationError):
                raise error
            raise RedisConnectionError(f"Redis refused the connection's setup: {reply}")


def _unreachable(address: Address, error: BaseException) -> RedisConnectionError:
    return RedisConnectionError(f"cannot reach Redis at {address.describe()}: {error}")


# -- synchronous ----------------------------------------------------------------------------------------

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
    def __init__(self, address: Address, setup: Sequence[tuple[Arg, ...]] = ()) -> None:
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
            raise RedisTimeoutError(f"timed out connecting to Redis at {address.describe()}") from error
        except OSError as error:  # includes ssl.SSLError
            raise _unreachable(address, error) from error
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
        if handshake:
            try:
                _check_handshake(self.execute(handshake))
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
            raise RedisTimeoutError(f"Redis at {self.address.describe()} did not take the commands in time") from error
        except OSError as error:
            raise _unreachable(self.address, error) from error

    def receive(self, count: int) -> list[Any]:
        try:
            replies: list[Any] = []
            while len(replies) < count:
                reply = self._reader.gets()
                if reply is False:
                    data = self._sock.recv(_RECV)
                    if not data:
                        raise RedisConnectionError(f"Redis at {self.address.describe()} closed the connection")
                    self._reader.feed(data)
                else:
                    replies.append(reply)
            return replies
        except (TimeoutError, BlockingIOError) as error:  # BlockingIOError: SO_RCVTIMEO ran out
            raise RedisTimeoutError(f"Redis at {self.address.describe()} did not answer in time") from error
        except OSError as error:
            raise _unreachable(self.address, error) from error

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


#: The channel Redis publishes client-side caching invalidations on (RESP2, ``CLIENT TRACKING ... REDIRECT``).
INVALIDATE_CHANNEL: Final = b"__redis__:invalidate"


class Invalidations:
    """One connection subscribed to :data:`INVALIDATE_CHANNEL`, read without blocking when asked.

    Data connections send ``CLIENT TRACKING ON REDIRECT <client_id> NOLOOP``:
    Redis then tells this connection about every key they read that another
    connection changes, deletes or lets expire. Nothing reads it in the
    background: :meth:`drain` takes what has arrived, with one non-blocking
    ``recv``. Redis writes a change's answer and the invalidations it causes in
    the same pass of its event loop (in no fixed order, microseconds apart):
    a drain that starts after that pass sees the change.
    """

    def __init__(self, address: Address) -> None:
        self.address = address
        connection = _SyncConnection(address)
        try:
            (client_id,) = connection.execute([("CLIENT", "ID")])
            subscribed = connection.execute([("SUBSCRIBE", INVALIDATE_CHANNEL)])
        except BaseException:
            connection.close()
            raise
        if isinstance(client_id, ResponseError) or not isinstance(client_id, int):
            connection.close()
            raise RedisConnectionError(f"Redis at {address.describe()} refused CLIENT ID: {client_id}")
        if not (isinstance(subscribed[0], list) and subscribed[0][:1] == [b"subscribe"]):
            connection.close()
            raise RedisConnectionError(f"Redis at {address.describe()} refused the subscription: {subscribed[0]}")
        #: The id data connections redirect their invalidations to.
        self.client_id: int = client_id
        self.forks = _forks
        self._connection = connection
        connection._sock.setblocking(False)
        self.lost = False

    def drain(self) -> list[bytes] | None:
        """The keys invalidated since the last drain; ``None`` for "all of them".

        ``None`` when Redis flushed the database, or when the connection is
        lost (invalidations may have been missed: it is then closed for good).
        """
        if self.lost:
            return None
        connection = self._connection
        keys: list[bytes] = []
        everything = False
        try:
            while True:
                data = connection._sock.recv(_RECV)
                if not data:
                    raise EOFError("closed by the server")
                connection._reader.feed(data)
                while (message := connection._reader.gets()) is not False:
                    if not (isinstance(message, list) and len(message) == 3 and message[0] == b"message"):
                        continue  # a stray reply carries no invalidation
                    if message[2] is None:  # FLUSHALL / FLUSHDB: every key
                        everything = True
                    else:
                        keys.extend(message[2])
        except (BlockingIOError, ssl.SSLWantReadError):  # nothing more has arrived (rediss: no whole record)
            return None if everything else keys
        except (OSError, EOFError, ProtocolError):
            self.close()
            return None

    def close(self) -> None:
        self.lost = True
        self._connection.close()


class Sent:
    """Commands :meth:`SyncPool.send` wrote, on the connection their replies will come on."""

    __slots__ = ("attempt", "commands", "connection")

    def __init__(self, commands: Sequence[Command], connection: _SyncConnection | None) -> None:
        self.commands = commands
        #: ``None`` until :meth:`SyncPool._write` opens one (none was idle), and after a failure.
        self.connection = connection
        self.attempt = 0


class SyncPool:
    """Blocking connections for threads: see the module docs."""

    def __init__(self, address: Address) -> None:
        self.address = address
        #: Commands every new connection sends after the address' handshake (client-side caching's
        #: CLIENT TRACKING); changing them with :meth:`renew` retires the connections made before.
        self.setup: tuple[tuple[Arg, ...], ...] = ()
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

    def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one write and return their replies (error replies as ResponseError)."""
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
                except (RedisConnectionError, RedisTimeoutError) as error:
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
                connection = sent.connection = _SyncConnection(self.address, setup)
                connection.generation = generation
            try:
                connection.send(sent.commands)
                return
            except (RedisConnectionError, RedisTimeoutError) as error:
                self._fail(sent, error)
            except BaseException:
                connection.close()
                sent.connection = None
                raise

    def _fail(self, sent: Sent, error: RedisConnectionError | RedisTimeoutError) -> None:
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
                raise RedisConnectionError(
                    f"all {address.max_connections} connections to Redis at {address.describe()} are busy"
                )
            if self._closed:
                raise RedisConnectionError("the Redis store is closed")
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
            future.set_exception(RedisConnectionError(f"connection to Redis at {self.address.describe()} lost"))
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
            self.fail(RedisTimeoutError(f"Redis at {self.address.describe()} did not answer in time"))
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
        self.fail(RedisConnectionError(f"connection to Redis at {self.address.describe()} lost: {reason}"))

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
    """One shared, pipelined connection per event loop: see the module docs."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._protocol: _MuxProtocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Future[_MuxProtocol] | None = None
        self._closed = False
        #: Commands every new connection sends after the address' handshake (client-side caching's
        #: CLIENT TRACKING); whoever changes them sends them on the live connection too.
        self.setup: tuple[tuple[Arg, ...], ...] = ()

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
            raise RedisTimeoutError(f"timed out connecting to Redis at {address.describe()}") from error
        except OSError as error:
            raise _unreachable(address, error) from error
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
            if handshake:
                try:
                    _check_handshake(await protocol.send(handshake))
                except BaseException:
                    protocol.fail(RedisConnectionError("handshake failed"))
                    raise
            if self._closed:  # aclose() was called while this connected
                protocol.fail(RedisConnectionError("the Redis store is closed"))
                raise RedisConnectionError("the Redis store is closed")
            self._protocol = protocol
            return protocol
        finally:
            self._connecting = None

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one write and return their replies (error replies as ResponseError)."""
        attempt = 0
        while True:
            if self._closed:
                raise RedisConnectionError("the Redis store is closed")
            protocol = self._protocol
            if protocol is None or protocol.lost is not None or self._loop is not asyncio.get_running_loop():
                protocol = await self._connect()
            try:
                return await protocol.send(commands)
            except (RedisConnectionError, RedisTimeoutError):
                if self._protocol is protocol:
                    self._protocol = None
                if attempt >= self.address.retries:
                    raise
                attempt += 1

    async def subscribe(self, channel: str, poll: float) -> AsyncIterator[bytes]:
        """The data of each message published on ``channel``, on a connection of its own, until closed.

        Raises ``ConnectionError`` when the connection is lost; wakes every
        ``poll`` seconds without yielding so a cancelled consumer is noticed.
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
