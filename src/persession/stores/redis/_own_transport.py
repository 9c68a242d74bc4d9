"""persession's own connections (stores built from a redis://, rediss:// or unix:// URL) as transports.

Where ops become RESP commands and replies come back: an error reply is
raised as the own connections' error (the store translates it), except a
``WRONGTYPE`` read, which is returned; a script the server lacks (a fresh
server, ``SCRIPT FLUSH``, a failover) is sent again as ``EVAL``, which caches it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from ._hashes import _is_wrong_type
from ._ops import _Arg, _Batch, _Call, _commands, _eval, _Op, _Read
from ._own import AsyncMux, ReplyError, Sent, SyncPool, error_reply
from ._scripts import _Script
from ._transport import _AsyncTransport, _SyncTransport


def _is_noscript(reply: Any) -> bool:
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


def _raise_errors(replies: list[Any], tolerant: bool) -> list[Any]:
    """Error replies raised (the first one) or, with ``tolerant``, given their class (:func:`._own.error_reply`)."""
    for index, reply in enumerate(replies):
        if isinstance(reply, ReplyError):
            error = error_reply(str(reply))
            if not tolerant:
                raise error
            replies[index] = error
    return replies


def _failed(op: _Op, reply: ReplyError) -> ReplyError:
    """The error reply to a single op: a read of a key that is not a hash gets it back; anything else raises."""
    error = error_reply(str(reply))
    if type(op) is _Read and _is_wrong_type(error):
        return error
    raise error


def _script_loads(scripts: tuple[_Script, ...]) -> tuple[tuple[_Arg, ...], ...]:
    return tuple(("SCRIPT", "LOAD", script.text) for script in scripts)


class _OwnSync(_SyncTransport):
    """A :class:`~._own.SyncPool` as a transport: ops are sent now and their replies read later."""

    splits = True

    def __init__(self, pool: SyncPool, *, twin: Callable[[], _AsyncTransport] | None = None) -> None:
        super().__init__(owned=(pool.close,), twin=twin)
        self.pool = pool

    def run(self, op: _Op) -> Any:
        return self.receive(op, self.pool.send(_commands(op)))  # the same path as a split op

    def send(self, op: _Op) -> Sent:
        return self.pool.send(_commands(op))

    def receive(self, op: _Op, sent: Sent) -> Any:
        replies = self.pool.receive(sent)
        if type(op) is _Batch:
            return _raise_errors(replies, op.tolerant)
        reply = replies[0]
        if isinstance(reply, ReplyError):
            return self.answer(op, reply)
        return reply

    def answer(self, op: _Op, reply: Any) -> Any:
        """What an error reply to a single op means: its EVAL's reply after NOSCRIPT, the read's WRONGTYPE, or raise."""
        if type(op) is _Call and _is_noscript(reply):
            (reply,) = self.pool.execute((_eval(op),))
            if not isinstance(reply, ReplyError):
                return reply
        return _failed(op, reply)

    def preload(self, scripts: tuple[_Script, ...]) -> None:
        self.pool.preload(_script_loads(scripts))


class _OwnAsync(_AsyncTransport):
    """An :class:`~._own.AsyncMux` as a transport."""

    def __init__(self, mux: AsyncMux) -> None:
        super().__init__(owned=(mux.aclose,))
        self.mux = mux

    async def run(self, op: _Op) -> Any:
        replies = await self.mux.execute(_commands(op))
        if type(op) is _Batch:
            return _raise_errors(replies, op.tolerant)
        reply = replies[0]
        if isinstance(reply, ReplyError):
            return await self.answer(op, reply)
        return reply

    async def answer(self, op: _Op, reply: Any) -> Any:
        """See :meth:`_OwnSync.answer`."""
        if type(op) is _Call and _is_noscript(reply):
            (reply,) = await self.mux.execute((_eval(op),))
            if not isinstance(reply, ReplyError):
                return reply
        return _failed(op, reply)

    def messages(self, channel: str, poll: float) -> AsyncIterator[bytes]:
        return self.mux.subscribe(channel, poll)

    def preload(self, scripts: tuple[_Script, ...]) -> None:
        self.mux.preload(_script_loads(scripts))
