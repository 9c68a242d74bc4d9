"""No secret, password or session id in the repr() or str() of anything persession builds.

Each object is built with a recognisable signing secret, store key secret,
store password and session id, then its ``repr()`` and ``str()`` are searched
for them: configs, middlewares (both shells, Flask's ``init_app``), the
engine, sessions as the application sees them, the signers and what they
return, every store (from URLs with a password too), and the ``ConfigError``
raised for a bad secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask, session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from _mongo import MongoServer, mongo_server_fixture  # noqa: F401  (the fixture)
from _redis import RedisServer, redis_server_fixture, redis_servers_fixture  # noqa: F401  (the fixtures)
from persession import ConfigError, Record, Session, SessionConfig
from persession.asgi import SessionMiddleware as ASGIMiddleware
from persession.core import SessionEngine
from persession.integrations.flask import init_app
from persession.signing import ExpressSigner, ItsdangerousSigner, new_session_id
from persession.stores import AsyncMemoryStore, AsyncSqliteStore, MemoryStore, SqliteStore, store_from_url
from persession.wsgi import SessionMiddleware as WSGIMiddleware

SECRET = "reprtest-signing-secret-8f2c4e6a0b1d3f5e7a9c"
OLD_SECRET = "reprtest-older-secret-1a3c5e7b9d0f2a4c6e8b"
STORE_KEY = "reprtest-store-key-secret-5d7f9b1c3e5a7c9e1b"
PASSWORD = "hunter2pass"
SID = new_session_id()
HIDDEN = (SECRET, OLD_SECRET, STORE_KEY, PASSWORD, SID)


def assert_hidden(obj: object, what: str) -> None:
    """Neither ``repr(obj)`` nor ``str(obj)`` shows a secret, the password or the session id."""
    for text in (repr(obj), str(obj)):
        shown = [value for value in HIDDEN if value in text]
        assert not shown, f"{what}: {text!r} shows {shown}"


def record() -> Record:
    return Record({"user": "alice"}, created=1.0, accessed=2.0, expires=9e9)


def test_config_repr_hides_the_secrets() -> None:
    """SessionConfig's repr shows its options but neither the signing secrets nor store_key_secret."""
    config = SessionConfig(secret=[SECRET, OLD_SECRET.encode()], store_key_secret=STORE_KEY, cookie_name="sid")
    assert_hidden(config, "SessionConfig")
    assert "cookie_name='sid'" in repr(config)
    assert "secret=<2 secrets>" in repr(config)
    assert_hidden(SessionConfig(secret=SECRET.encode(), compat="express"), "express SessionConfig")
    assert_hidden(SessionConfig(secret=SECRET, store_key_secret=STORE_KEY.encode()), "bytes store_key_secret")


def test_engine_and_signers_hide_secrets_and_ids() -> None:
    """The engine, both signers, and a verified cookie value (Unsigned) show no secret and no id."""
    for compat in (None, "express"):
        store_key = STORE_KEY if compat is None else None
        engine = SessionEngine(SessionConfig(secret=[SECRET, OLD_SECRET], store_key_secret=store_key, compat=compat))
        assert_hidden(engine, f"SessionEngine (compat={compat})")
        assert_hidden(engine.signer, f"signer (compat={compat})")
        unsigned = engine.signer.unsign(engine.signer.sign(SID))
        assert unsigned is not None
        assert unsigned.sid == SID
        assert_hidden(unsigned, f"Unsigned (compat={compat})")
    assert_hidden(ItsdangerousSigner([SECRET.encode()]), "ItsdangerousSigner")
    assert_hidden(ExpressSigner([SECRET.encode()]), "ExpressSigner")


def test_session_repr_hides_its_id() -> None:
    """A Session with an id (and the engine's sessions) shows its keys, never its id."""
    session_ = Session({"user": "alice"}, id=SID)
    assert session_.id == SID
    assert_hidden(session_, "Session")
    assert "user" in repr(session_)
    engine = SessionEngine(SessionConfig(secret=SECRET))
    opening = engine.open(f"session={engine.signer.sign(SID)}")
    built = engine.build(opening, record())
    assert built.id == SID
    assert_hidden(built, "a loaded Session")


@pytest.mark.anyio
async def test_starlette_request_session_and_middleware_hide_secrets_and_id() -> None:
    """Under the ASGI middleware: request.session's repr and str, and the middleware's own, show no secret nor id."""
    seen: dict[str, str] = {}

    async def show(request: Request) -> JSONResponse:
        request.session["user"] = "alice"
        seen["repr"], seen["str"], seen["id"] = repr(request.session), str(request.session), request.session.id  # type: ignore[attr-defined]
        return JSONResponse({})

    store = AsyncMemoryStore()
    app = ASGIMiddleware(
        Starlette(routes=[Route("/", show)]), secret=[SECRET, OLD_SECRET], store_key_secret=STORE_KEY, store=store
    )
    for what, obj in {"ASGI middleware": app, "its engine": app.engine, "its config": app.config}.items():
        assert_hidden(obj, what)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        for _ in range(2):  # the second request's session has its id: the first one's gets it when saved
            assert (await client.get("/")).status_code == 200
        cookie = client.cookies["session"]
    unsigned = app.engine.signer.unsign(cookie)
    assert unsigned is not None
    # With store_key_secret, Session.id is the stored hash; the cookie carries the token it is made from.
    for sid in (seen["id"], unsigned.sid, cookie):
        assert sid
        assert sid not in seen["repr"]
        assert sid not in seen["str"]
    assert_hidden(store, "AsyncMemoryStore")


def test_flask_session_and_wsgi_middleware_hide_secrets_and_id() -> None:
    """flask.session (a FlaskSession), init_app's middleware and a bare WSGI middleware show no secret nor id."""
    seen: dict[str, str] = {}
    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, SECRET_KEY_FALLBACKS=[OLD_SECRET])
    middleware = init_app(app, store=MemoryStore(), store_key_secret=STORE_KEY)

    @app.get("/")
    def show() -> str:
        session["user"] = "alice"
        seen["repr"], seen["str"], seen["id"] = repr(session), str(session), session.id  # type: ignore[attr-defined]
        return "ok"

    client = app.test_client()
    for _ in range(2):  # the second request's session has its id: the first one's gets it when saved
        assert client.get("/").status_code == 200
    assert seen["id"]
    assert seen["id"] not in seen["repr"] + seen["str"]
    assert "user" in seen["repr"]
    owned = {"init_app's middleware": middleware, "its engine": middleware.engine, "its config": middleware.config}
    for what, obj in owned.items():
        assert_hidden(obj, what)
    bare = WSGIMiddleware(app.wsgi_app, secret=SECRET, store=MemoryStore())
    assert_hidden(bare, "WSGI middleware")


@pytest.mark.anyio
async def test_memory_and_sqlite_stores_hide_the_ids_they_hold(tmp_path: Path) -> None:
    """Memory and SQLite stores, both flavours (by constructor and by URL), holding a session, show no id."""
    sync_stores: list[Any] = [
        MemoryStore(),
        SqliteStore(tmp_path / "a.db"),
        store_from_url(f"sqlite://{tmp_path / 'b.db'}"),
    ]
    for store in sync_stores:
        store.save(SID, record())
        assert store.load(SID) is not None
        assert_hidden(store, type(store).__name__)
        twin = store.to_async()
        assert_hidden(twin, f"{type(store).__name__}.to_async()")
        await twin.close()
        store.close()
    for astore in (AsyncMemoryStore(), AsyncSqliteStore(tmp_path / "c.db")):
        await astore.save(SID, record())
        assert await astore.load(SID) is not None
        assert_hidden(astore, type(astore).__name__)
        await astore.close()


@pytest.mark.server
@pytest.mark.anyio
async def test_redis_stores_from_a_url_with_a_password_hide_it(redis_server: RedisServer) -> None:
    """RedisStore, AsyncRedisStore and the ASGI middleware built from a redis:// URL with a password do not show it."""
    from persession.stores.redis import AsyncRedisStore, RedisStore

    url = f"redis://:{PASSWORD}@127.0.0.1:{redis_server.port}/0"
    sync_store = RedisStore.from_url(url)
    from_url = store_from_url(url)
    assert isinstance(from_url, RedisStore)
    async_stores = [AsyncRedisStore.from_url(url), sync_store.to_async()]
    middleware = ASGIMiddleware(Starlette(), secret=SECRET, store=url)
    try:
        for what, obj in {
            "RedisStore.from_url": sync_store,
            "store_from_url": from_url,
            "AsyncRedisStore.from_url": async_stores[0],
            "RedisStore.to_async()": async_stores[1],
            "ASGI middleware on a URL": middleware,
            "its store": middleware.store,
        }.items():
            assert_hidden(obj, what)
    finally:
        sync_store.close()
        from_url.close()
        for astore in [*async_stores, middleware.store]:
            await astore.close()


@pytest.mark.server
@pytest.mark.anyio
async def test_mongo_stores_from_a_url_with_a_password_hide_it(mongo_server: MongoServer) -> None:
    """MongoStore and AsyncMongoStore built from a mongodb:// URL with a password do not show it."""
    from persession.stores.mongo import AsyncMongoStore, MongoStore

    host = mongo_server.url.removeprefix("mongodb://").split("/", 1)[0]
    url = f"mongodb://reprtest:{PASSWORD}@{host}/reprtest"
    sync_store = MongoStore.from_url(url)
    async_stores = [AsyncMongoStore.from_url(url), sync_store.to_async()]
    try:
        for what, obj in {
            "MongoStore.from_url": sync_store,
            "AsyncMongoStore.from_url": async_stores[0],
            "MongoStore.to_async()": async_stores[1],
        }.items():
            assert_hidden(obj, what)
    finally:
        sync_store.close()
        for astore in async_stores:
            await astore.close()


@pytest.mark.parametrize(
    ("options", "option"),
    [
        pytest.param({"secret": [SECRET, 42]}, "secret", id="a secret of the wrong type"),
        pytest.param({"secret": [SECRET, ""]}, "secret", id="an empty secret in the list"),
        pytest.param({"secret": {SECRET, OLD_SECRET}}, "secret", id="a set of secrets"),
        pytest.param({"secret": [SECRET, OLD_SECRET], "store_key_secret": OLD_SECRET}, "store_key_secret", id="equal"),
        pytest.param(
            {"secret": SECRET, "store_key_secret": STORE_KEY, "compat": "express"}, "store_key_secret", id="express"
        ),
        pytest.param({"secret": SECRET, "store_key_secret": 42}, "store_key_secret", id="store key not text"),
        pytest.param({"secret": SECRET, "store_key_secret": STORE_KEY, "max_age": -1}, "max_age", id="other option"),
    ],
)
def test_config_errors_for_a_bad_secret_name_the_option_not_the_secret(options: dict[str, Any], option: str) -> None:
    """A ConfigError about a secret names the option; neither its message nor its repr shows a secret."""
    with pytest.raises(ConfigError) as caught:
        SessionConfig(**options)
    assert caught.value.option == option
    assert_hidden(caught.value, f"ConfigError({option})")
    with pytest.raises(ConfigError) as through_middleware:
        WSGIMiddleware(Flask(__name__).wsgi_app, store=MemoryStore(), **options)
    assert_hidden(through_middleware.value, f"the middleware's ConfigError({option})")


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"redis://:{PASSWORD}@/0", id="redis without a host"),
        pytest.param(f"redis://:{PASSWORD}@127.0.0.1:notaport/0", id="redis with a bad port"),
        pytest.param(f"redis:/:{PASSWORD}@127.0.0.1:6379/0", id="redis with one slash"),
        pytest.param(f"redis:{PASSWORD}@127.0.0.1:6379/0", id="redis without slashes"),
        pytest.param(f"redis+sentinel://:{PASSWORD}@h:x/service", id="sentinel with a bad port"),
        pytest.param(f"unix://:{PASSWORD}@", id="unix without a path"),
        pytest.param(f"mongodb://user:{PASSWORD}@127.0.0.1:notaport/db", id="mongodb with a bad port"),
        pytest.param(f"mongodb://user:{PASSWORD}@/db", id="mongodb without a host"),
        pytest.param(f"sqlite://user:{PASSWORD}@host/db", id="sqlite with a host"),
        pytest.param(f"memcached://user:{PASSWORD}@host/", id="unsupported scheme"),
    ],
)
def test_malformed_store_urls_do_not_show_their_password(url: str) -> None:
    """The ConfigError for a store URL it cannot use, given directly or as a middleware's store=, hides the password."""
    with pytest.raises(ConfigError) as direct:
        store_from_url(url)
    assert direct.value.option == "url"
    assert_hidden(direct.value, "store_from_url's ConfigError")
    with pytest.raises(ConfigError) as through_middleware:
        ASGIMiddleware(Starlette(), secret=SECRET, store=url)
    assert_hidden(through_middleware.value, "the ASGI middleware's ConfigError")
