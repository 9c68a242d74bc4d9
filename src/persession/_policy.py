"""What the websocket guards check: a session predicate, the Origin policy and the guarded paths.

Pure, no I/O (re-exported by :mod:`persession.guard`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._login import is_logged_in
from ._origin import OriginPolicy
from .exceptions import ConfigError
from .session import Session


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a handshake was refused."""

    #: The HTTP status: 401 (not logged in) or 403 (origin).
    status: int
    #: A short reason, safe to send to the client.
    reason: str


_NOT_LOGGED_IN = Refusal(401, "login required")
_BAD_ORIGIN = Refusal(403, "origin not allowed")


@dataclass(frozen=True)
class GuardPolicy:
    """What the websocket guards check: the session predicate, the origin, the paths.

    :param predicate: ``predicate(session) -> bool``, "is this session allowed
        a websocket"; default :func:`is_logged_in`.
    :param origins: the :class:`OriginPolicy`; default same-origin only.
    :param include: path prefixes guarded; default every path.
    :param exclude: path prefixes never guarded (checked first).
    :param recheck_interval: seconds between two checks that the sessions of
        live websockets still exist (those whose record is gone are closed
        with code 4001); default 30, ``None`` to never re-check. Needs the
        guard to know the store (see :class:`WebSocketGuard`).

    .. versionadded:: 0.1
    """

    predicate: Callable[[Session], bool] = is_logged_in
    origins: OriginPolicy = field(default_factory=OriginPolicy)
    include: Sequence[str] = ("/",)
    exclude: Sequence[str] = ()
    recheck_interval: float | None = 30.0

    def __post_init__(self) -> None:
        if self.recheck_interval is not None and not self.recheck_interval > 0:
            raise ConfigError("recheck_interval", "must be a positive number of seconds, or None")

    def guards(self, path: str) -> bool:
        """Whether websocket handshakes to ``path`` are checked."""
        if any(path.startswith(prefix) for prefix in self.exclude):
            return False
        return any(path.startswith(prefix) for prefix in self.include)

    def check(
        self, session: Session | None, origin: str | None, host: str | None, forwarded_host: str | None
    ) -> Refusal | None:
        """``None`` when the handshake may proceed, else why not. The origin is checked first."""
        if not self.origins.allows(origin, host, forwarded_host):
            return _BAD_ORIGIN
        if session is None or session.failed is not None or not self.predicate(session):
            return _NOT_LOGGED_IN
        return None
