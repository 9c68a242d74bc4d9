"""Every error persession raises, in one place.

::

    PersessionError
    ├── ConfigError          (also a ValueError) a bad option, named in the message
    ├── StoreError           a store backend failed; ``original_error`` holds the driver's error
    │   └── StoreUnavailable the backend cannot be reached (connection refused, timeout)
    ├── SessionTooLarge      the serialised session is over the configured limit
    └── SessionError
        ├── SessionNotAvailable  (also a RuntimeError) no middleware put a session there
        ├── SessionReadOnly      (also a RuntimeError) a websocket tried to change its session
        └── NotSerializable      (also a TypeError) a session value is not JSON

Client input (tampered, expired or unknown cookies) is never an exception: it
gives a fresh session and a warning on the ``persession.security`` logger.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "MissingExtra",
    "NotSerializable",
    "PersessionError",
    "SessionError",
    "SessionNotAvailable",
    "SessionReadOnly",
    "SessionTooLarge",
    "StoreError",
    "StoreUnavailable",
]


class PersessionError(Exception):
    """The base of every error persession raises.

    .. versionadded:: 0.1
    """


class ConfigError(PersessionError, ValueError):
    """An option has a value persession cannot work with.

    Raised when a :class:`~persession.SessionConfig`, a middleware or a store is
    constructed, never while serving a request.
    """

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        #: The name of the offending option, as the constructor spells it.
        self.option = option


class MissingExtra(ConfigError, ImportError):
    """A package an optional feature needs is not installed; the message says which extra installs it.

    A :class:`ConfigError` (so ``except ConfigError`` still catches it) and an
    :class:`ImportError` (so ``except ImportError`` and optional-import
    checks do too). ``extra`` is the extra's name, as in
    ``pip install "persession-web[redis]"``.

    .. versionadded:: 0.2
    """

    def __init__(self, option: str, message: str, *, extra: str) -> None:
        super().__init__(option, message)
        #: The extra that installs what is missing (``"redis"``, ``"mongo"``...).
        self.extra = extra


class StoreError(PersessionError):
    """A session store failed to read or write.

    The middleware answers ``503 Service Unavailable`` when the application
    lets this propagate.
    """

    def __init__(self, message: str, original_error: BaseException | None = None) -> None:
        super().__init__(message)
        #: The driver's exception, when there was one.
        self.original_error = original_error


class StoreUnavailable(StoreError):
    """The store could not be reached: connection refused, reset or timed out."""


class SessionTooLarge(PersessionError):
    """The serialised session is larger than ``SessionConfig.max_size``.

    The engine raises it when the response starts, after the handler has
    returned; the middlewares then save nothing (the store keeps the previous
    version), answer a clean 500 and log this error on ``persession``.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"session is {size} bytes serialised, over the limit of {limit}")
        #: The serialised size in bytes.
        self.size = size
        #: The configured limit in bytes.
        self.limit = limit


class SessionError(PersessionError):
    """Misuse of a session object."""


class SessionNotAvailable(SessionError, RuntimeError):
    """No session was found where one was asked for."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(f"{message} ({hint})")
        #: What to do about it.
        self.hint = hint


class SessionReadOnly(SessionError, RuntimeError):
    """The session cannot change here (a websocket scope, after the handshake)."""


class NotSerializable(SessionError, TypeError):
    """A value stored in the session cannot be encoded as JSON."""

    def __init__(self, key: str, error: Exception) -> None:
        super().__init__(f"session[{key!r}] is not JSON-serialisable: {error}")
        #: The session key whose value was refused.
        self.key = key
