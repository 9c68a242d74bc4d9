"""A ``dict`` that records what a request changed: the data half of :class:`~persession.Session`.

Every read marks the dict ``accessed`` (what ``Vary: Cookie`` follows) and
every write names its key in the change set, so a store merges exactly that.
Values are checked for JSON as they are set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NoReturn, TypeVar, overload

from .exceptions import SessionReadOnly
from .records import Change, check_value

_MISSING: Any = object()
_D = TypeVar("_D", bound="RecordingDict")


class RecordingDict(dict[str, Any]):
    """The session's data and what this request did to it (see :class:`~persession.Session`)."""

    __slots__ = ("_all_modified", "_cleared", "_deleted", "_set", "accessed", "read_only")

    def __init__(self, data: Mapping[str, Any] | None = None, *, read_only: bool = False) -> None:
        super().__init__(data or {})
        #: The application read or wrote the session during this request.
        self.accessed: bool = False
        #: Changes raise :class:`~persession.SessionReadOnly` (websocket scopes).
        self.read_only: bool = read_only
        self._set: set[str] = set()
        self._deleted: set[str] = set()
        self._cleared = False
        self._all_modified = False

    @property
    def modified(self) -> bool:
        """The request changed the session's data."""
        return self._changed()

    def _changed(self) -> bool:
        """:attr:`modified`, as a method no subclass redefines (the core reads it once per request)."""
        return bool(self._set or self._deleted or self._cleared or self._all_modified)

    def changes(self) -> Change:
        """Exactly what this request changed, for a merge into the stored record."""
        keys = set(self) if self._all_modified else self._set
        return Change(
            set={key: dict.__getitem__(self, key) for key in keys if dict.__contains__(self, key)},
            deleted=frozenset(self._deleted),
            cleared=self._cleared,
        )

    def mark_accessed(self) -> None:
        """Record that the application used the session (Starlette calls this)."""
        self._use()

    def mark_modified(self, key: str | None = None) -> None:
        """Record a change made inside a value: ``key``'s, or every key's when ``None``."""
        self._write()
        if key is None:
            self._all_modified = True
        elif dict.__contains__(self, key):
            check_value(key, dict.__getitem__(self, key))
            self._set.add(key)

    def _forget(self) -> None:
        """Empty the data and forget its changes (a destroyed session starts over)."""
        dict.clear(self)
        self._set.clear()
        self._deleted.clear()
        self._cleared = False
        self._all_modified = False

    def _use(self) -> None:
        # Every read and write comes here first; a session whose load failed raises instead.
        self.accessed = True

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
        check_value(key, value)
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

    def __ior__(self: _D, other: Any) -> _D:  # type: ignore[override]
        self.update(other)
        return self

    def __reduce__(self) -> NoReturn:
        # Sessions are JSON only; refusing pickle keeps them out of caches and queues by accident.
        raise TypeError("Session objects are not picklable; copy the data with dict(session)")
