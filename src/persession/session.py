"""The session object applications see.

:class:`Session` is a :class:`dict` (so Starlette's ``request.session``,
``json.dumps(session)`` and Flask's session mixins work) that records what a
request changed, so the store can merge exactly that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn, overload

from .exceptions import NotSerializable, SessionReadOnly, StoreError
from .records import Change

__all__ = ["Session"]

_MISSING: Any = object()
#: The one key of a deferred session's storage until it is loaded (see Session.deferred).
_NOT_LOADED: Any = object()


# json.dumps with options builds a JSONEncoder per call; this one is built once (encode() is thread-safe).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def _check_value(key: object, value: object) -> None:
    if type(key) is str and key.isascii():
        # The common values need no trial encoding: an ASCII key with an int, bool, None or ASCII
        # str is always JSON, and a float is unless it is NaN or infinite.
        if value is None or type(value) is int or type(value) is bool:
            return
        if (type(value) is str and value.isascii()) or (type(value) is float and math.isfinite(value)):
            return
    elif not isinstance(key, str):
        raise NotSerializable(repr(key), TypeError("session keys must be str"))
    try:
        # As the stores encode it: UTF-8 refuses lone surrogates (which json.loads of a
        # client's "\\ud800" gives), so they fail here, in the handler, not at save time.
        _ENCODER.encode({key: value}).encode("utf-8")
    except (TypeError, ValueError) as error:  # UnicodeEncodeError is a ValueError
        raise NotSerializable(key, error) from None


class Session(dict[str, Any]):
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
        "_all_modified",
        "_cleared",
        "_created",
        "_deleted",
        "_destroyed",
        "_error",
        "_expires",
        "_id",
        "_loader",
        "_login_user",
        "_regenerate",
        "_set",
        "_touched",
        "accessed",
        "read_only",
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
        super().__init__(data or {})
        self._id = id
        self._created = created
        self._expires = expires
        self._loader: Callable[[], Session] | None = None
        #: The application read or wrote the session during this request.
        self.accessed: bool = False
        #: Changes raise :class:`~persession.SessionReadOnly` (websocket scopes).
        self.read_only: bool = read_only
        #: The store already moved the expiry when loading the session (a
        #: rolling load): the end of the request need not touch it again.
        self.refreshed: bool = refreshed
        #: Where :func:`persession.guard.login` puts the user: ``("user",)``, or
        #: ``("passport", "user")`` in express mode (``SessionConfig.user_path``).
        self.user_path: tuple[str, ...] = user_path
        self._set: set[str] = set()
        self._deleted: set[str] = set()
        self._cleared = False
        self._all_modified = False
        self._regenerate = False
        self._destroyed = False
        self._touched = False
        self._error: StoreError | None = None
        self._login_user: str | None = None

    @classmethod
    def unavailable(cls, error: StoreError) -> Session:
        """A session whose every use raises ``error`` (the store was down at load)."""
        session = cls()
        session._error = error
        return session

    @classmethod
    def deferred(
        cls, loader: Callable[[], Session], *, read_only: bool = False, user_path: tuple[str, ...] = ("user",)
    ) -> Session:
        """A session whose data ``loader`` returns when it is first used (see :meth:`ensure_loaded`).

        The WSGI middleware sends the store's load when the request arrives
        and reads the answer here, at the first use, so the round trip
        overlaps the framework's work. ``loader`` must not raise
        :class:`~persession.StoreError`: it returns :meth:`unavailable` instead.
        """
        session = cls(read_only=read_only, user_path=user_path)
        session._loader = loader
        # Not empty at the C level: json's C encoder answers "{}" for an empty dict without
        # calling items(), the override that loads. Nothing else reads the dict's own storage
        # past the overrides, and ensure_loaded() replaces it.
        dict.__setitem__(session, _NOT_LOADED, None)
        return session

    def ensure_loaded(self) -> None:
        """Finish loading the session now, if its load was deferred (:meth:`deferred`).

        Every use of the session does this first, and the middleware does it
        when the response starts; a store failure is not raised here but by
        the next use, as for a session whose load failed at once.
        """
        loader = self._loader
        if loader is None:
            return
        self._loader = None
        loaded = loader()
        dict.clear(self)
        dict.update(self, dict.items(loaded))
        self._id = loaded._id
        self._created = loaded._created
        self._expires = loaded._expires
        self.refreshed = loaded.refreshed
        self._error = loaded._error

    @property
    def loaded(self) -> bool:
        """The session's data is here: it was not deferred, or its first use (or the response) loaded it."""
        return self._loader is None

    @property
    def id(self) -> str | None:
        """The session id, or ``None`` for a session not stored yet. Never log it."""
        if self._loader is not None:
            self.ensure_loaded()
        return self._id

    @property
    def created(self) -> float | None:
        """When the stored session was created (Unix seconds), or ``None``."""
        if self._loader is not None:
            self.ensure_loaded()
        return self._created

    @property
    def expires(self) -> float | None:
        """When the stored session expires (Unix seconds), or ``None``."""
        if self._loader is not None:
            self.ensure_loaded()
        return self._expires

    # -- state the core reads -------------------------------------------------

    @property
    def is_new(self) -> bool:
        """The session has not been stored yet."""
        return self.id is None

    @property
    def modified(self) -> bool:
        """The request changed the session's data."""
        return self._changed()

    def _changed(self) -> bool:
        """:attr:`modified`, as a method no subclass redefines (the core reads it once per request)."""
        return bool(self._set or self._deleted or self._cleared or self._all_modified)

    @property
    def failed(self) -> StoreError | None:
        """The store error that made this session unusable, if any."""
        if self._loader is not None:
            self.ensure_loaded()
        return self._error

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

    def changes(self) -> Change:
        """Exactly what this request changed, for a merge into the stored record."""
        keys = set(self) if self._all_modified else self._set
        return Change(
            set={key: dict.__getitem__(self, key) for key in keys if dict.__contains__(self, key)},
            deleted=frozenset(self._deleted),
            cleared=self._cleared,
        )

    # -- lifecycle verbs ------------------------------------------------------

    def mark_accessed(self) -> None:
        """Record that the application used the session (Starlette calls this)."""
        self._use()

    def mark_modified(self, key: str | None = None) -> None:
        """Record a change made inside a value: ``key``'s, or every key's when ``None``."""
        self._write()
        if key is None:
            self._all_modified = True
        elif dict.__contains__(self, key):
            _check_value(key, dict.__getitem__(self, key))
            self._set.add(key)

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
        super().clear()
        self._destroyed = True
        self._regenerate = False
        self._login_user = None
        self._set.clear()
        self._deleted.clear()
        self._cleared = False
        self._all_modified = False

    def touch(self) -> None:
        """Refresh the session's expiry and re-send its cookie at the end of this request.

        express-session: ``req.session.touch()``.
        """
        self._write()
        self._touched = True

    # -- dict interface -------------------------------------------------------

    def _use(self) -> None:
        if self._loader is not None:
            self.ensure_loaded()
        self.accessed = True
        if self._error is not None:
            raise self._error

    def _write(self) -> None:
        self._use()
        if self.read_only:
            raise SessionReadOnly("the session is read-only here (websocket scope)")

    def _record_set(self, key: str) -> None:
        self._set.add(key)
        self._deleted.discard(key)

    def _record_delete(self, key: str) -> None:
        self._set.discard(key)
        self._deleted.add(key)

    def __getitem__(self, key: str) -> Any:
        self._use()
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._use()
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self._use()
        return super().__iter__()

    def __len__(self) -> int:
        self._use()
        return super().__len__()

    def __bool__(self) -> bool:
        return len(self) > 0

    def __repr__(self) -> str:
        if self._loader is not None:
            return "<Session (not loaded yet)>"
        return f"<Session keys={sorted(dict.keys(self))!r}>"

    # dict's own C methods read the data without the overrides above.

    def __eq__(self, other: object) -> bool:
        self._use()
        return super().__eq__(other)

    def __ne__(self, other: object) -> bool:
        self._use()
        return super().__ne__(other)

    def __reversed__(self) -> Iterator[str]:
        self._use()
        return super().__reversed__()

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        self._use()
        return dict(super().items()) | other  # type: ignore[no-any-return]

    def get(self, key: str, default: Any = None, /) -> Any:
        self._use()
        return super().get(key, default)

    def keys(self) -> Any:
        self._use()
        return super().keys()

    def values(self) -> Any:
        self._use()
        return super().values()

    def items(self) -> Any:
        self._use()
        return super().items()

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` copy of the data."""
        self._use()
        return dict(super().items())

    def __setitem__(self, key: str, value: Any) -> None:
        self._write()
        _check_value(key, value)
        super().__setitem__(key, value)
        self._record_set(key)

    def __delitem__(self, key: str) -> None:
        self._write()
        super().__delitem__(key)
        self._record_delete(key)

    def clear(self) -> None:
        self._write()
        super().clear()
        self._set.clear()
        self._deleted.clear()
        self._cleared = True

    @overload
    def pop(self, key: str, /) -> Any: ...
    @overload
    def pop(self, key: str, default: Any, /) -> Any: ...
    def pop(self, key: str, default: Any = _MISSING, /) -> Any:
        self._write()
        if super().__contains__(key):
            self._record_delete(key)
            return super().pop(key)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[str, Any]:
        self._write()
        key, value = super().popitem()
        self._record_delete(key)
        return key, value

    def setdefault(self, key: str, default: Any = None, /) -> Any:
        self._write()
        if super().__contains__(key):
            return super().__getitem__(key)
        self[key] = default
        return default

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        self._write()
        pairs: Iterable[tuple[str, Any]]
        pairs = other.items() if isinstance(other, Mapping) else other
        for key, value in pairs:
            self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def __ior__(self, other: Any) -> Session:  # type: ignore[override]
        self.update(other)
        return self

    def __reduce__(self) -> NoReturn:
        # Sessions are JSON only; refusing pickle keeps them out of caches and queues by accident.
        raise TypeError("Session objects are not picklable; copy the data with dict(session)")
