"""Log in and log out, and the default "logged in" predicate (re-exported by :mod:`persession.guard`)."""

from __future__ import annotations

import copy
from typing import Any

from .session import Session


def login(session: Session, user: str | int, **extra: Any) -> None:
    """Log ``user`` in: a new session id (against fixation), then ``session["user"] = user``.

    In express mode (``SessionConfig(compat="express")``, the session's
    :attr:`~persession.Session.user_path` is ``("passport", "user")``) it sets
    ``session["passport"] = {"user": user}`` as passport's ``req.login()``
    does, keeping any other member of ``passport``.

    ``extra`` keys are stored too. The store indexes the session under
    ``str(user)``, so :meth:`~persession.stores.UserIndex.user_sessions` and
    :meth:`~persession.stores.UserIndex.revoke_user` find it.

    .. versionadded:: 0.1
    """
    session.regenerate()
    _put(session, session.user_path, user)
    for key, value in extra.items():
        session[key] = value
    session.mark_login(str(user))


def _put(session: Session, path: tuple[str, ...], value: object) -> None:
    """``session[path[0]]...[path[-1]] = value``, assigning the top-level key so the change is recorded."""
    head, *rest = path
    if not rest:
        session[head] = value
        return
    top = session.get(head)
    top = copy.deepcopy(top) if isinstance(top, dict) else {}
    inner = top
    for key in rest[:-1]:
        child = inner.get(key)
        inner[key] = child if isinstance(child, dict) else {}
        inner = inner[key]
    inner[rest[-1]] = value
    session[head] = top


def _user_of(session: Session) -> Any:
    value: Any = session
    for key in session.user_path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def logout(session: Session) -> None:
    """Log out: the session is deleted from the store and its cookie expired.

    .. versionadded:: 0.1
    """
    session.destroy()


def is_logged_in(session: Session) -> bool:
    """The default "logged in" predicate: ``session["user"]`` is set (by :func:`login`).

    In express mode: ``session["passport"]["user"]`` is set (by :func:`login`, or by passport).
    """
    return _user_of(session) is not None
