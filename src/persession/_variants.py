"""Sessions that behave differently in one respect are subclasses, not flags.

A :class:`FailedSession` raises its store error at every use. The WSGI
prefetch's deferred session (``persession._prefetch``) is another. Either
combines with an application's session class (Flask's
:class:`~persession.integrations.flask.FlaskSession`) through
:func:`combine`, so a failed or deferred Flask session is still a
``FlaskSession`` and nothing swaps an object's class at run time.
"""

from __future__ import annotations

from typing import Any, TypeVar

from .exceptions import ConfigError, StoreError
from .session import Session

_S = TypeVar("_S", bound=Session)


_COMBINED: dict[tuple[type[Session], type[Session]], Any] = {}


def combine(variant: type[_S], base: type[Session]) -> type[_S]:
    """``variant``'s behaviour on ``base``: ``variant`` itself when ``base`` is :class:`Session`.

    :raises ConfigError: ``base`` adds instance attributes (``__slots__``) of its own,
        which cannot be combined; a session class must declare ``__slots__ = ()``.
    """
    if base is Session or issubclass(base, variant):
        return variant
    combined: type[_S] | None = _COMBINED.get((variant, base))
    if combined is not None:
        return combined
    try:
        combined = type(
            base.__name__,
            (variant, base),
            {"__slots__": (), "__module__": base.__module__, "__qualname__": base.__qualname__},
        )
    except TypeError as error:
        raise ConfigError("session_class", f"a Session subclass must declare __slots__ = () ({error})") from None
    _COMBINED[variant, base] = combined
    return combined


class FailedSession(Session):
    """A session whose load failed: every use raises the store's error (the shells answer 503)."""

    __slots__ = ("_error",)

    def __init__(self, error: StoreError, **options: Any) -> None:
        super().__init__(**options)
        self._error = error

    @property
    def failed(self) -> StoreError:
        return self._error

    def _use(self) -> None:
        self.accessed = True
        raise self._error
