"""What a request's end does: plain data, shared by the engine, the shells and the stores.

Re-exported by :mod:`persession.core`, where users import them; the stores
read a :class:`Plan` without importing the engine's policy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .records import Change, Record

__all__ = ["Action", "Opening", "Plan"]


class Action(str, enum.Enum):
    """What a request's end does to the store."""

    NOTHING = "nothing"
    #: Write a whole record under ``Plan.sid`` (new or regenerated), deleting ``Plan.replaces``.
    SAVE = "save"
    #: Apply ``Plan.change`` to the existing record ``Plan.sid``.
    MERGE = "merge"
    #: Move the expiry of ``Plan.sid`` to ``Plan.expires``.
    TOUCH = "touch"
    #: Delete ``Plan.sid``.
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Opening:
    """What the request's cookie says, before the store is asked."""

    #: The verified session id, or ``None`` (never in the repr).
    sid: str | None = field(default=None, repr=False)
    #: A cookie of ours was sent (valid or not).
    present: bool = False
    #: The cookie was signed by an older secret: re-issue it.
    stale: bool = False
    #: With ``store_key_secret``: the id as the cookie carries it, ``sid`` being
    #: its keyed hash (what the store knows the session by). ``None`` otherwise:
    #: the cookie carries ``sid`` itself.
    token: str | None = field(default=None, repr=False)
    #: ``(cookie id, cookie value)`` when the value is exactly what signing that
    #: id gives now (:attr:`~persession.signing.Unsigned.exact`): a re-sent
    #: cookie reuses it instead of signing again.
    signed: tuple[str, str] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do at the end of a request: one store call and the headers."""

    action: Action = Action.NOTHING
    #: The session id the action applies to (never in the repr).
    sid: str | None = field(default=None, repr=False)
    #: For SAVE: the whole record.
    record: Record | None = None
    #: For SAVE: an old id to delete in the same atomic step (regenerate).
    replaces: str | None = field(default=None, repr=False)
    #: For MERGE: what the request changed.
    change: Change | None = None
    #: For MERGE and TOUCH: the new expiry (Unix seconds).
    expires: float | None = None
    #: A ``Set-Cookie`` header value to send, if any (never in the repr: it carries the signed id).
    set_cookie: str | None = field(default=None, repr=False)
    #: Send ``Vary: Cookie``: the response depends on the session.
    vary: bool = False
    #: For SAVE: index the new session under this user id (a login).
    user: str | None = None
