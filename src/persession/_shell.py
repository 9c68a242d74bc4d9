"""What the WSGI and ASGI shells share: building the engine and the 503 answer."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from .config import SessionConfig
from .core import SessionEngine
from .exceptions import ConfigError, NotSerializable, SessionTooLarge, StoreError
from .session import Session
from .stores import store_from_url
from .stores.base import AsyncStore, Store, SupportsAsync

log = logging.getLogger("persession")

UNAVAILABLE_STATUS = 503
WSGI_UNAVAILABLE_STATUS = "503 Service Unavailable"
UNAVAILABLE_BODY = b"Session store unavailable; please retry shortly.\n"
#: Seconds clients are asked to wait after a 503.
RETRY_AFTER = 5
UNAVAILABLE_HEADERS: list[tuple[str, str]] = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Content-Length", str(len(UNAVAILABLE_BODY))),
    ("Retry-After", str(RETRY_AFTER)),
    ("Cache-Control", "no-store"),
]
#: The answer when the session cannot be saved because of what the application put in it
#: (over ``max_size``, or a value made unserialisable in place): a clean 500, no cookie.
ERROR_STATUS = 500
ERROR_BODY = b"Internal Server Error\n"
ERROR_HEADERS: list[tuple[str, str]] = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Content-Length", str(len(ERROR_BODY))),
    ("Cache-Control", "no-store"),
]
#: What the application put in the session that cannot be saved, found at response start.
UNSAVABLE: tuple[type[Exception], ...] = (SessionTooLarge, NotSerializable)
_OPTION_NAMES = frozenset(f.name for f in fields(SessionConfig) if f.init)


def make_engine(
    secret: str | bytes | Sequence[str | bytes] | None,
    config: SessionConfig | None,
    options: dict[str, Any],
    clock: Callable[[], float] = time.time,
    session_class: type[Session] = Session,
) -> SessionEngine:
    """The engine for a middleware's ``secret=``, ``config=`` and other keyword options."""
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown option (see SessionConfig for the list)")
    if config is not None:
        if not isinstance(config, SessionConfig):
            raise ConfigError("config", f"must be a SessionConfig, not {type(config).__name__}")
        if secret is not None or options:
            raise ConfigError("config", "pass either config= or secret= and options, not both")
    else:
        if secret is None:
            raise ConfigError("secret", "a secret is required to sign session ids")
        config = SessionConfig(secret=secret, **options)
    return SessionEngine(config, clock=clock, session_class=session_class)


def is_async_store(store: object) -> bool:
    return inspect.iscoroutinefunction(getattr(store, "load", None))


def sync_store(store: Store | str | None) -> Store:
    if store is None:
        from .stores.sqlite import SqliteStore

        return SqliteStore()
    if isinstance(store, str):
        return store_from_url(store)
    if is_async_store(store) or not isinstance(store, Store):
        raise ConfigError("store", f"the WSGI middleware needs a synchronous store, got {type(store).__name__}")
    return store


def async_store(store: AsyncStore | Store | str | None) -> AsyncStore:
    if store is None:
        from .stores.sqlite import AsyncSqliteStore

        return AsyncSqliteStore()
    if isinstance(store, str):
        built = store_from_url(store)
        try:
            return async_store(built)
        finally:
            # The twin opens connections of its own: the sync store only carried the URL's options.
            built.close()
    if is_async_store(store) and isinstance(store, AsyncStore):
        return store
    if isinstance(store, SupportsAsync):
        return store.to_async()
    raise ConfigError(
        "store",
        f"the ASGI middleware needs an asyncio store; {type(store).__name__} is synchronous"
        " (use its Async twin, e.g. AsyncRedisStore)",
    )


def start_refusal(error: Exception, start_response: Callable[..., object]) -> bytes:
    """Answer through a WSGI ``start_response`` instead of the application; return the body to send.

    ``503`` for a :class:`~persession.StoreError`, a clean ``500`` for what
    :data:`UNSAVABLE` lists (nothing was written: plans and stores check
    before any I/O, so the store keeps the previous version). Logged here.
    Only ever the first real ``start_response`` call, so no ``exc_info``:
    test clients (Werkzeug's, Flask's, httpx's) raise any they are given.
    """
    if isinstance(error, StoreError):
        log_unavailable(error)
        start_response(WSGI_UNAVAILABLE_STATUS, list(UNAVAILABLE_HEADERS))
        return UNAVAILABLE_BODY
    log_unsavable(error)
    start_response("500 Internal Server Error", list(ERROR_HEADERS))
    return ERROR_BODY


def status_code(status: str) -> int:
    """The code of a WSGI status line (``500`` for one that has none)."""
    try:
        return int(status[:3])
    except ValueError:
        return 500


def log_unavailable(error: StoreError) -> None:
    log.error("session store failed, answering 503: %s", error)


def log_unsavable(error: Exception) -> None:
    # The message names the size and limit, or the key; never the session id.
    log.error("session not saved, answering 500: %s: %s", type(error).__name__, error)
