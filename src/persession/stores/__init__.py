"""Session stores, and :func:`store_from_url`.

Importing this package imports no optional driver: the Redis and MongoDB
stores load their driver when their module is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..exceptions import ConfigError
from ..records import SessionInfo
from .base import (
    AsyncRollingLoad,
    AsyncStore,
    AsyncUserIndex,
    PendingLoad,
    PendingWrite,
    PrefetchLoad,
    RevocationFeed,
    RollingLoad,
    SplitWrite,
    Store,
    SupportsAsync,
    UserIndex,
    arun_plan,
    run_plan,
)
from .memory import AsyncMemoryStore, MemoryStore
from .sqlite import AsyncSqliteStore, SqliteStore, default_sqlite_path

if TYPE_CHECKING:
    from .mongo import AsyncMongoStore, MongoStore
    from .redis import AsyncRedisStore, RedisStore

__all__ = [
    "AsyncMemoryStore",
    "AsyncMongoStore",
    "AsyncRedisStore",
    "AsyncRollingLoad",
    "AsyncSqliteStore",
    "AsyncStore",
    "AsyncUserIndex",
    "MemoryStore",
    "MongoStore",
    "PendingLoad",
    "PendingWrite",
    "PrefetchLoad",
    "RedisStore",
    "RevocationFeed",
    "RollingLoad",
    "SessionInfo",
    "SplitWrite",
    "SqliteStore",
    "Store",
    "SupportsAsync",
    "UserIndex",
    "arun_plan",
    "default_sqlite_path",
    "run_plan",
    "store_from_url",
]

_SQLITE_OPTIONS = {"table": str, "busy_timeout": float, "purge_interval": float}


def store_from_url(url: str, **options: Any) -> Store:
    """Build a store from a URL; keyword ``options`` go to the store's constructor.

    The result is a synchronous store that the ASGI middleware also accepts
    (it builds the asyncio twin with ``to_async()``). Accepted URLs:

    - ``sqlite:///abs/path/sessions.db`` (absolute path), ``sqlite:relative.db``,
      or ``sqlite://`` for the default file; query parameters ``table``,
      ``busy_timeout``, ``purge_interval``;
    - ``memory://`` (this process only; tests);
    - ``mongodb://[user:pass@]host[:port]/dbname[?collection=sessions&...]`` or
      ``mongodb+srv://``: :meth:`MongoStore.from_url <persession.stores.mongo.MongoStore.from_url>`
      (needs ``pip install "persession-web[mongo]"``);
    - ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS),
      ``unix:///path/to/redis.sock``, and
      ``redis+sentinel://[password@]host:port[,host:port...]/service_name[/db]``:
      :meth:`RedisStore.from_url <persession.stores.redis.RedisStore.from_url>`
      (needs ``pip install "persession-web[redis]"``).

    :raises ConfigError: the URL is malformed or its scheme unsupported. A URL
        never falls back to a default server.

    .. versionadded:: 0.1
    """
    if not isinstance(url, str) or ":" not in url:
        raise ConfigError("url", f"{url!r} is not a store URL such as 'sqlite:///path/sessions.db'")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return MemoryStore(**options)
    if scheme == "sqlite":
        if parts.netloc:
            raise ConfigError("url", "sqlite URLs take a path, not a host: 'sqlite:///abs/path.db'")
        query: dict[str, Any] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in _SQLITE_OPTIONS:
                raise ConfigError("url", f"unknown sqlite URL parameter {key!r}")
            try:
                query[key] = _SQLITE_OPTIONS[key](value)
            except ValueError:
                raise ConfigError("url", f"sqlite URL parameter {key}={value!r} is not valid") from None
        path = unquote(parts.path) or None
        return SqliteStore(path, **{**query, **options})
    if scheme in ("mongodb", "mongodb+srv"):
        from .mongo import MongoStore  # imports pymongo, or raises MissingExtra saying how to install it

        return MongoStore.from_url(url, **options)
    if scheme in ("redis", "rediss", "unix", "redis+sentinel"):
        from .redis import RedisStore  # imports redis-py, or raises MissingExtra saying how to install it

        return RedisStore.from_url(url, **options)
    raise ConfigError(
        "url", f"unsupported store URL scheme {parts.scheme!r}; use sqlite://, redis://, mongodb:// or memory://"
    )


# Stores whose module imports an optional driver: imported on first attribute access.
_LAZY = {
    "MongoStore": ".mongo",
    "AsyncMongoStore": ".mongo",
    "RedisStore": ".redis",
    "AsyncRedisStore": ".redis",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)
