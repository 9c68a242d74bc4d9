"""Client-side caching's invalidations: the connection Redis tells which tracked keys changed."""

from __future__ import annotations

import ssl
from typing import Final

from .address import Address
from .errors import ProtocolError, ReplyError, Unreachable
from .sync import _SyncConnection, fork_count
from .wire import _RECV

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
        if isinstance(client_id, ReplyError) or not isinstance(client_id, int):
            connection.close()
            raise Unreachable(f"Redis at {address.describe()} refused CLIENT ID: {client_id}")
        if not (isinstance(subscribed[0], list) and subscribed[0][:1] == [b"subscribe"]):
            connection.close()
            raise Unreachable(f"Redis at {address.describe()} refused the subscription: {subscribed[0]}")
        #: The id data connections redirect their invalidations to.
        self.client_id: int = client_id
        self.forks = fork_count()
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
