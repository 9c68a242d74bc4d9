"""The session object applications see.

:class:`Session` is a :class:`dict` (so Starlette's ``request.session``,
``json.dumps(session)`` and Flask's session mixins work) that records what a
request changed, so the store can merge exactly that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._recording import RecordingDict
from .exceptions import StoreError

__all__ = ["Session"]


class Session(RecordingDict):
    """A session: a ``dict`` of JSON values plus its lifecycle verbs.

    Values must be JSON-serialisable; setting one that is not raises
    :class:`~persession.NotSerializable` at once, naming the key. Changes
    inside a nested value (``session["cart"].append(x)``) are not seen: assign
    the key again or call :meth:`mark_modified`.

    The lifecycle verbs take effect when the response starts:

    - :meth:`regenerate` -- a new id for the same data (call it on login);
    - :meth:`destroy` -- delete the session and expire its cookie (logout);
    - :meth:`touch` -- refresh its expiry and re-send the cookie.

    .. versionadded:: 0.1
    """

    __slots__ = (
        "_created",
        "_destroyed",
        "_expires",
        "_id",
        "_login_user",
        "_regenerate",
        "_touched",
        "refreshed",
        "user_path",
    )

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        created: float | None = None,
        expires: float | None = None,
        read_only: bool = False,
        refreshed: bool = False,
        user_path: tuple[str, ...] = ("user",),
    ) -> None:
        super().__init__(data, read_only=read_only)
        self._id = id
        self._created = created
        self._expires = expires
        #: The store already moved the expiry when loading the session (a
        #: rolling load): the end of the request need not touch it again.
        self.refreshed: bool = refreshed
        #: Where :func:`persession.guard.login` puts the user: ``("user",)``, or
        #: ``("passport", "user")`` in express mode (``SessionConfig.user_path``).
        self.user_path: tuple[str, ...] = user_path
        self._regenerate = False
        self._destroyed = False
        self._touched = False
        self._login_user: str | None = None

    @property
    def id(self) -> str | None:
        """The session id, or ``None`` for a session not stored yet. Never log it."""
        return self._id

    @property
    def created(self) -> float | None:
        """When the stored session was created (Unix seconds), or ``None``."""
        return self._created

    @property
    def expires(self) -> float | None:
        """When the stored session expires (Unix seconds), or ``None``."""
        return self._expires

    # -- state the core reads -------------------------------------------------

    @property
    def is_new(self) -> bool:
        """The session has not been stored yet."""
        return self.id is None

    @property
    def failed(self) -> StoreError | None:
        """The store error that made this session unusable, if any.

        See :meth:`SessionEngine.unavailable <persession.core.SessionEngine.unavailable>`.
        """
        return None

    @property
    def regenerated(self) -> bool:
        """:meth:`regenerate` was called."""
        return self._regenerate

    @property
    def destroyed(self) -> bool:
        """:meth:`destroy` was called."""
        return self._destroyed

    @property
    def touched(self) -> bool:
        """:meth:`touch` was called."""
        return self._touched

    @property
    def logged_in_as(self) -> str | None:
        """The user id :func:`persession.guard.login` recorded in this request, if any."""
        return self._login_user

    def mark_login(self, user_id: str) -> None:
        """Record a login, so the store indexes this session under ``user_id``.

        :func:`persession.guard.login` calls this; use that instead.
        """
        self._write()
        self._login_user = user_id

    # -- lifecycle verbs ------------------------------------------------------

    def regenerate(self) -> None:
        """Move the session to a new id, keeping its data; the old id stops working.

        Call it whenever privileges change (login), against session fixation.
        express-session: ``req.session.regenerate()`` (which also clears the
        data; call :meth:`clear` too for that).
        """
        self._write()
        self._regenerate = True

    def destroy(self) -> None:
        """Delete the session from the store and expire its cookie.

        Data set afterwards starts a new session under a new id.
        express-session: ``req.session.destroy()``.
        """
        self._write()
        self._forget()
        self._destroyed = True
        self._regenerate = False
        self._login_user = None

    def touch(self) -> None:
        """Refresh the session's expiry and re-send its cookie at the end of this request.

        express-session: ``req.session.touch()``.
        """
        self._write()
        self._touched = True

    def __repr__(self) -> str:
        return f"<Session keys={sorted(dict.keys(self))!r}>"
