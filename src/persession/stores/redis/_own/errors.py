"""The errors of persession's own connections (none of them is redis-py's)::

    OwnError
    ├── Unreachable          a refused, lost or closed connection, a refused setup, a full pool, a closed store
    │   └── ProtocolError    the server sent something that is not RESP2: the connection is dropped
    ├── Timeout              no connection, or no answer, within the timeout
    └── ReplyError           an error reply; ``code`` is its first word
        ├── NoScript         NOSCRIPT: the script is not cached on this server
        ├── ReadOnly         READONLY: a replica (a failover moved the primary away)
        ├── Loading          LOADING: the server is still loading its dataset
        ├── NoPermission     NOPERM: the ACL user may not run the command
        └── AuthFailed       NOAUTH, WRONGPASS...: the credentials were refused

The readers return an error reply as a plain :class:`ReplyError` (returned,
not raised: a batch's other replies still count); :func:`error_reply` gives it
its subclass. Retrying on a fresh connection can help after
:class:`Unreachable` and :class:`Timeout`, never after a :class:`ReplyError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final


class OwnError(Exception):
    """What persession's own Redis connections raise; the stores translate it to a StoreError."""


class Unreachable(OwnError):
    """The connection was refused, lost or closed, or its setup refused; or no connection was free."""


class ProtocolError(Unreachable):
    """The server sent something that is not RESP2: the connection is dropped."""


class Timeout(OwnError):
    """Connecting, or an answer, took longer than the timeout."""


class ReplyError(OwnError):
    """An error reply, its message as Redis sent it (``str(error)``)."""

    @property
    def code(self) -> str:
        """The message's first word: ``"ERR"``, ``"WRONGTYPE"``, ``"NOSCRIPT"``... (``""`` for an empty one)."""
        return str(self).partition(" ")[0]


class NoScript(ReplyError):
    """``NOSCRIPT``: the server has not cached the script (a first use, or after SCRIPT FLUSH)."""


class ReadOnly(ReplyError):
    """``READONLY``: a write reached a replica."""


class Loading(ReplyError):
    """``LOADING``: the server is still loading its dataset into memory."""


class NoPermission(ReplyError):
    """``NOPERM``: the ACL user may not run the command or touch the key."""


class AuthFailed(ReplyError):
    """``NOAUTH``, ``WRONGPASS`` or ``invalid password``: the credentials were refused."""


_KINDS: Final[tuple[tuple[str, type[ReplyError]], ...]] = (
    ("NOSCRIPT", NoScript),
    ("READONLY", ReadOnly),
    ("LOADING", Loading),
    ("NOPERM", NoPermission),
)
_AUTH_ERRORS: Final = ("NOAUTH", "WRONGPASS", "invalid username-password", "invalid password")


def error_reply(message: str) -> ReplyError:
    """The error for an error reply: :class:`NoScript` for ``NOSCRIPT ...`` and so on, else a plain ReplyError."""
    if message.startswith(_AUTH_ERRORS):
        return AuthFailed(message)
    for prefix, kind in _KINDS:
        if message.startswith(prefix):
            return kind(message)
    return ReplyError(message)


def _unreachable(where: str, error: BaseException) -> Unreachable:
    return Unreachable(f"cannot reach Redis at {where}: {error}")


def _check_handshake(replies: Sequence[Any]) -> None:
    """Raise for the first error reply of a connection's setup: AuthFailed, or Unreachable for any other."""
    for reply in replies:
        if isinstance(reply, ReplyError):
            error = error_reply(str(reply))
            if isinstance(error, AuthFailed):
                raise error
            raise Unreachable(f"Redis refused the connection's setup: {reply}")
