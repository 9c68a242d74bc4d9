"""Store URLs: the layout query parameter, redis+sentinel URLs, and the clients and addresses they give."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.retry
import redis.sentinel
from redis.backoff import NoBackoff

from ...exceptions import ConfigError
from ._cache import _CachingAsync, _CachingSync
from ._connect_redis import _check_layout
from ._constants import (
    _SCHEMES,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_RETRIES,
    DEFAULT_SENTINEL_PORT,
    DEFAULT_SOCKET_TIMEOUT,
    Layout,
)
from ._own import Address, AsyncMux, SyncPool, parse_url
from ._own_transport import _OwnAsync, _OwnSync
from ._redispy import _redis_py_async, _redis_py_sync
from ._transport import _AsyncTransport, _SyncTransport


@dataclass(frozen=True, slots=True, repr=False)  # the URL may hold a password
class _Target:
    """A store URL, parsed: the layout, and where Redis is (``url`` without ``layout`` for the own connections)."""

    layout: Layout
    url: str
    sentinel: _SentinelTarget | None


def _parse_store_url(url: object, layout: Layout | None) -> _Target:
    """The one parser of a Redis store URL (the ``layout`` keyword may be given in its query instead).

    :raises ConfigError: as :meth:`RedisStore.from_url` documents.
    """
    bare, chosen = _split_layout(url, layout)
    where = _parse_url(bare)
    if isinstance(where, _SentinelTarget):
        return _Target(chosen, str(bare), where)
    return _Target(chosen, str(where), None)


def _split_layout(url: object, layout: Layout | None) -> tuple[object, Layout]:
    """``url`` without its ``layout`` query parameter, and the layout (the keyword's, or the URL's)."""
    if not isinstance(url, str) or "?" not in url:
        return url, _check_layout(layout or "persession")
    base, _, query = url.partition("?")
    kept: list[str] = []
    from_url: str | None = None
    for piece in query.split("&"):
        name, _, value = piece.partition("=")
        if unquote(name) == "layout":
            from_url = unquote(value)
        elif piece:
            kept.append(piece)
    if layout is not None and from_url is not None and layout != from_url:
        raise ConfigError("layout", f"the URL says layout={from_url!r}, the keyword {layout!r}")
    chosen = _check_layout(layout or from_url or "persession")
    return (f"{base}?{'&'.join(kept)}" if kept else base), chosen


@dataclass(frozen=True, slots=True, repr=False)  # it holds the password
class _SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None


def _host_port(text: str, url: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ConfigError("url", f"a redis+sentinel URL needs host[:port] for every sentinel: {_redact(url)!r}")
    try:
        port = int(port_text) if port_text else DEFAULT_SENTINEL_PORT
    except ValueError:
        raise ConfigError("url", f"bad sentinel port {port_text!r} in {_redact(url)!r}") from None
    if not 0 < port < 65536:
        raise ConfigError("url", f"bad sentinel port {port} in {_redact(url)!r}")
    return host, port


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:  # 'redis:/:pw@host' or 'redis:pw@host': no '://', but a password all the same
        scheme, rest = "", url
    _, at, hosts = rest.rpartition("@")
    return f"{scheme}{sep}***@{hosts}" if at else url


def _parse_url(url: object) -> _SentinelTarget | str:
    """Validate a store URL: the URL itself for redis-py, or where a Sentinel setup lives."""
    if not isinstance(url, str) or "://" not in url:
        shown = repr(_redact(url)) if isinstance(url, str) else repr(url)
        raise ConfigError("url", f"{shown} is not a Redis URL such as 'redis://host:6379/0'")
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigError("url", f"unsupported scheme {scheme!r}; use one of {', '.join(_SCHEMES)}")
    if scheme == "unix":
        if not urlsplit(url).path:
            raise ConfigError("url", f"a unix:// URL needs a socket path ('unix:///run/redis.sock'): {_redact(url)!r}")
        return url
    if scheme != "redis+sentinel":
        try:
            host = urlsplit(url).hostname
        except ValueError as error:
            raise ConfigError("url", f"malformed Redis URL {_redact(url)!r}: {error}") from None
        if not host:  # redis-py would quietly use localhost
            raise ConfigError("url", f"the Redis URL names no host: {_redact(url)!r}")
        return url
    netloc, _, path = rest.partition("/")
    path, _, query = path.partition("?")
    if query:
        raise ConfigError("url", "redis+sentinel URLs take no query; pass client options as keywords")
    userinfo, _, hosts = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username, password = (unquote(user) or None, unquote(secret)) if colon else (None, unquote(user))
    if not hosts:
        raise ConfigError("url", f"the redis+sentinel URL names no sentinel host: {_redact(url)!r}")
    sentinels = tuple(_host_port(part, url) for part in hosts.split(","))
    service, _, db_text = path.strip("/").partition("/")
    if not service:
        raise ConfigError("url", "a redis+sentinel URL needs the service name: redis+sentinel://host:26379/mymaster")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise ConfigError("url", f"bad database number {db_text!r} in the redis+sentinel URL") from None
    return _SentinelTarget(sentinels, unquote(service), db, username, password)


def _client_options(options: Mapping[str, Any]) -> dict[str, Any]:
    merged = {"socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT, "socket_timeout": DEFAULT_SOCKET_TIMEOUT}
    merged.update(options)
    return merged


def _master_options(target: _SentinelTarget) -> dict[str, Any]:
    master: dict[str, Any] = {"db": target.db}
    if target.username is not None:
        master["username"] = target.username
    if target.password is not None:
        master["password"] = target.password
    return master


def _sentinel_options(options: Mapping[str, Any]) -> dict[str, Any]:
    # Sentinels get the timeouts and retry policy, never the master's credentials.
    return {k: v for k, v in options.items() if k.startswith("socket_") or k == "retry"}


def _check_client(client: object, *, want_async: bool) -> None:
    is_async = isinstance(client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster))
    if is_async and not want_async:
        raise ConfigError("client", "RedisStore needs a synchronous client; use AsyncRedisStore for redis.asyncio")
    if not is_async and want_async:
        raise ConfigError("client", "AsyncRedisStore needs a redis.asyncio client; use RedisStore for redis.Redis")


def _sentinel_client(
    target: _SentinelTarget, client_options: Mapping[str, Any]
) -> tuple[redis.Redis, list[Callable[[], None]], dict[str, Any]]:
    """The master's client for a redis+sentinel URL, what closes it, and the options its asyncio twin gets."""
    options = _client_options(client_options)
    # Sync and asyncio retry objects differ: the twin gets the default policy.
    twin_options = {k: v for k, v in options.items() if k != "retry"}
    options.setdefault("retry", redis.retry.Retry(NoBackoff(), DEFAULT_RETRIES))
    sentinel_options = _sentinel_options(options)
    # redis-py's sync Sentinel is unannotated.
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        list(target.sentinels), sentinel_kwargs=options.pop("sentinel_kwargs", sentinel_options), **options
    )
    client: redis.Redis = sentinel.master_for(target.service, **_master_options(target))  # type: ignore[no-untyped-call, unused-ignore]
    owned: list[Callable[[], None]] = [client.close]
    owned += [sentinel_client.close for sentinel_client in sentinel.sentinels]
    return client, owned, twin_options


def _async_sentinel_client(
    target: _SentinelTarget, client_options: Mapping[str, Any]
) -> tuple[redis.asyncio.Redis, list[Callable[[], Any]]]:
    """As :func:`_sentinel_client`, for asyncio (no twin to build)."""
    options = _client_options(client_options)
    options.setdefault("retry", redis.asyncio.retry.Retry(NoBackoff(), DEFAULT_RETRIES))
    sentinel_options = _sentinel_options(options)
    sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # unannotated
        list(target.sentinels), sentinel_kwargs=options.pop("sentinel_kwargs", sentinel_options), **options
    )
    client: redis.asyncio.Redis = sentinel.master_for(target.service, **_master_options(target))
    owned: list[Callable[[], Any]] = [client.aclose]
    owned += [sentinel_client.aclose for sentinel_client in sentinel.sentinels]
    return client, owned


def _lean_address(url: str, options: Mapping[str, Any]) -> Address:
    defaults = {
        "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT,
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
        "retries": DEFAULT_RETRIES,
        "max_connections": DEFAULT_MAX_CONNECTIONS,
        "pool_timeout": DEFAULT_POOL_TIMEOUT,
    }
    return parse_url(url, options, defaults)


def _check_cacheable(target: _Target, client_cache: int) -> None:
    if not client_cache:
        return
    if target.sentinel is not None:
        raise ConfigError("client_cache", "needs persession's own connections: a redis, rediss or unix URL")
    if target.layout == "connect-redis":
        raise ConfigError("client_cache", "needs the persession layout, not connect-redis")


def _sync_transport(target: _Target, options: Mapping[str, Any], client_cache: int) -> _SyncTransport:
    """What a :class:`RedisStore` built from ``target`` runs on; its ``twin()`` is built the same way."""
    _check_cacheable(target, client_cache)
    if target.sentinel is None:
        own = _OwnSync(
            SyncPool(_lean_address(target.url, options)),
            twin=lambda: _async_transport(target, options, client_cache),
        )
        return _CachingSync(own, client_cache) if client_cache else own
    client, owned, twin_options = _sentinel_client(target.sentinel, options)
    return _redis_py_sync(client, owned=owned, twin=lambda: _async_transport(target, twin_options, 0))


def _async_transport(target: _Target, options: Mapping[str, Any], client_cache: int) -> _AsyncTransport:
    """What an :class:`AsyncRedisStore` built from ``target`` runs on."""
    _check_cacheable(target, client_cache)
    if target.sentinel is None:
        own = _OwnAsync(AsyncMux(_lean_address(target.url, options)))
        return _CachingAsync(own, client_cache) if client_cache else own
    client, owned = _async_sentinel_client(target.sentinel, options)
    return _redis_py_async(client, owned=owned)
