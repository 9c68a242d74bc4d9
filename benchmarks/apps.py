"""The applications the benchmarks serve: one per variant, chosen by environment variables.

``benchmarks/run.py`` serves ``apps:wsgi`` with gunicorn (Flask variants) or
``apps:asgi`` with uvicorn (Starlette variants), with ``benchmarks/`` on
``PYTHONPATH`` and:

- ``PERSESSION_BENCH_VARIANT``: a name from :data:`FLASK_VARIANTS` or
  :data:`STARLETTE_VARIANTS`;
- ``PERSESSION_BENCH_REDIS_URL``, ``PERSESSION_BENCH_MONGO_URL`` and
  ``PERSESSION_BENCH_SQLITE_PATH``: the stores' locations (only the one the
  variant uses must be set).

Every variant answers three routes, the same in every framework:

- ``GET /login`` stores a small logged-in session (the benchmark calls it
  once to get a cookie);
- ``GET /read`` reads the session (``session["user"]``): a read-only request;
- ``GET /write`` sets one key (``session["visits"] += 1``): a writing request.

The bare variants answer the same bodies without any session middleware (the
cookie is sent and ignored): the framework's own cost.
"""

from __future__ import annotations

import os
from typing import Any

SECRET = "benchmark-secret-not-for-production"  # noqa: S105 (a benchmark's, on 127.0.0.1)
#: What ``/login`` stores: a user, a few small values, a CSRF token.
LOGIN_DATA: dict[str, Any] = {
    "user": "alice",
    "roles": ["admin", "editor"],
    "csrf": "Zx5sJ3rQ0m2Qe9dW1vY7bK4tH8nL6pC2aF0gS3jD5kE",
    "visits": 0,
}
FLASK_VARIANTS = (
    "flask-bare",
    "flask-cookie",
    "flask-session-redis",
    "flask-persession-sqlite",
    "flask-persession-redis",
    "flask-persession-redis-cached",
    "flask-persession-redispy",
    "flask-persession-mongo",
)
STARLETTE_VARIANTS = (
    "starlette-bare",
    "starlette-cookie",
    "starsessions-redis",
    "starlette-persession-sqlite",
    "starlette-persession-redis",
    "starlette-persession-redis-cached",
    "starlette-persession-redispy",
    "starlette-persession-mongo",
)
#: The redis-py clients the ``*-persession-redispy`` variants pass in: the timeouts the store's docs ask for.
REDISPY_OPTIONS: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
#: Cookie lifetime: 14 days, persession's default, for every variant that has one.
LIFETIME = 14 * 24 * 3600


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set")
    return value


# -- Flask (WSGI) -------------------------------------------------------------------------------------


def make_flask(variant: str) -> Any:
    from flask import Flask, session

    app = Flask("bench")
    if variant == "flask-bare":

        @app.get("/login")
        def bare_login() -> str:
            return "ok"

        @app.get("/read")
        def bare_read() -> str:
            return "alice"

        @app.get("/write")
        def bare_write() -> str:
            return "1"

        return app

    if variant == "flask-cookie":
        app.secret_key = SECRET
    elif variant == "flask-session-redis":
        import redis
        from flask_session import Session as FlaskSessionExtension

        app.config.update(
            SECRET_KEY=SECRET,
            SESSION_TYPE="redis",
            SESSION_REDIS=redis.Redis.from_url(_env("PERSESSION_BENCH_REDIS_URL")),
            PERMANENT_SESSION_LIFETIME=LIFETIME,
        )
        FlaskSessionExtension(app)
    elif variant.startswith("flask-persession-"):
        from persession.integrations.flask import init_app

        init_app(app, secret=SECRET, store=_sync_store(variant.removeprefix("flask-persession-")))
    else:
        raise RuntimeError(f"unknown Flask variant {variant!r}")

    @app.get("/login")
    def login() -> str:
        session.update(LOGIN_DATA)
        return "ok"

    @app.get("/read")
    def read() -> str:
        return str(session.get("user"))

    @app.get("/write")
    def write() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return str(session["visits"])

    return app


def _sync_store(kind: str) -> Any:
    if kind in ("redis", "redis-cached"):
        from persession.stores.redis import RedisStore

        # redis-cached: client-side caching of up to 10,000 sessions (opt-in; see docs/stores.md).
        cache = 10_000 if kind == "redis-cached" else 0
        return RedisStore.from_url(_env("PERSESSION_BENCH_REDIS_URL"), client_cache=cache)
    if kind == "redispy":
        import redis

        from persession.stores.redis import RedisStore

        # A client passed in: the path a Sentinel or Cluster client takes, not persession's own connections.
        return RedisStore(redis.Redis.from_url(_env("PERSESSION_BENCH_REDIS_URL"), **REDISPY_OPTIONS))
    if kind == "mongo":
        from persession.stores.mongo import MongoStore

        return MongoStore.from_url(_env("PERSESSION_BENCH_MONGO_URL"), "bench", "sessions")
    if kind == "sqlite":
        from persession.stores.sqlite import SqliteStore

        return SqliteStore(_env("PERSESSION_BENCH_SQLITE_PATH"))
    raise RuntimeError(f"unknown store {kind!r}")


# -- Starlette (ASGI) ---------------------------------------------------------------------------------


def make_starlette(variant: str) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    if variant == "starlette-bare":

        async def bare_login(request: Request) -> PlainTextResponse:
            return PlainTextResponse("ok")

        async def bare_read(request: Request) -> PlainTextResponse:
            return PlainTextResponse("alice")

        async def bare_write(request: Request) -> PlainTextResponse:
            return PlainTextResponse("1")

        routes = [Route("/login", bare_login), Route("/read", bare_read), Route("/write", bare_write)]
        return Starlette(routes=routes)

    middleware: list[Middleware]
    if variant == "starlette-cookie":
        from starlette.middleware.sessions import SessionMiddleware

        middleware = [Middleware(SessionMiddleware, secret_key=SECRET, max_age=LIFETIME)]
    elif variant == "starsessions-redis":
        import redis.asyncio
        from starsessions import SessionAutoloadMiddleware
        from starsessions import SessionMiddleware as StarSessionMiddleware
        from starsessions.stores.redis import RedisStore as StarRedisStore

        store = StarRedisStore(connection=redis.asyncio.Redis.from_url(_env("PERSESSION_BENCH_REDIS_URL")))
        middleware = [
            Middleware(StarSessionMiddleware, store=store, lifetime=LIFETIME, cookie_https_only=False),
            Middleware(SessionAutoloadMiddleware),
        ]
    elif variant.startswith("starlette-persession-"):
        from persession.asgi import SessionMiddleware as PersessionMiddleware

        store = _async_store(variant.removeprefix("starlette-persession-"))
        middleware = [Middleware(PersessionMiddleware, secret=SECRET, store=store)]
    else:
        raise RuntimeError(f"unknown Starlette variant {variant!r}")

    async def login(request: Request) -> PlainTextResponse:
        request.session.update(LOGIN_DATA)
        return PlainTextResponse("ok")

    async def read(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.session.get("user")))

    async def write(request: Request) -> PlainTextResponse:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return PlainTextResponse(str(request.session["visits"]))

    routes = [Route("/login", login), Route("/read", read), Route("/write", write)]
    return Starlette(routes=routes, middleware=middleware)


def _async_store(kind: str) -> Any:
    if kind in ("redis", "redis-cached"):
        from persession.stores.redis import AsyncRedisStore

        cache = 10_000 if kind == "redis-cached" else 0
        return AsyncRedisStore.from_url(_env("PERSESSION_BENCH_REDIS_URL"), client_cache=cache)
    if kind == "redispy":
        import redis.asyncio

        from persession.stores.redis import AsyncRedisStore

        return AsyncRedisStore(redis.asyncio.Redis.from_url(_env("PERSESSION_BENCH_REDIS_URL"), **REDISPY_OPTIONS))
    if kind == "mongo":
        from persession.stores.mongo import AsyncMongoStore

        return AsyncMongoStore.from_url(_env("PERSESSION_BENCH_MONGO_URL"), "bench", "sessions")
    if kind == "sqlite":
        from persession.stores.sqlite import AsyncSqliteStore

        return AsyncSqliteStore(_env("PERSESSION_BENCH_SQLITE_PATH"))
    raise RuntimeError(f"unknown store {kind!r}")


def __getattr__(name: str) -> Any:
    # Built on first access, so importing this module for its constants needs no framework.
    if name == "wsgi":
        return make_flask(_env("PERSESSION_BENCH_VARIANT"))
    if name == "asgi":
        return make_starlette(_env("PERSESSION_BENCH_VARIANT"))
    raise AttributeError(name)
