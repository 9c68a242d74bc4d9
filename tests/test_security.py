"""The claims of docs/security.md, checked.

- Session ids and cookie values never reach a log record, through a whole
  login / write / logout / bad-cookie / replay / malformed-record flow at
  DEBUG, under both shells, with and without ``store_key_secret``.
- No pickle, marshal or shelve anywhere in ``src/``.
- Signatures are checked with :func:`hmac.compare_digest`.
- ``store_key_secret``: every store (memory, SQLite, Redis, MongoDB) keeps
  only the keyed hash of each id; a dump of the store replayed as cookies,
  even signed with the real secret, finds nothing; rotating ``secret`` keeps
  the sessions, changing ``store_key_secret`` loses them; it is refused with
  ``compat="express"`` and when it equals a signing secret.
- Cookie flags behind a TLS-terminating proxy (``proxy=True``).
- A secret shorter than 32 bytes (signing, older, or ``store_key_secret``; in
  express mode too) logs one WARNING per process on ``persession.security``
  with the command that makes a good one, never the secret.

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import ast
import contextlib
import hmac
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import itsdangerous.signer
import pytest

import persession.config
from _mongo import make_mongo_store, mongo_server_fixture  # noqa: F401  (the fixture)
from _redis import RedisServer, redis_server_fixture, redis_servers_fixture, unique_prefix  # noqa: F401
from _servers import ROOT
from persession import ConfigError, SessionConfig
from persession.asgi import SessionMiddleware as ASGIMiddleware
from persession.core import SessionEngine
from persession.signing import ItsdangerousSigner
from persession.stores import AsyncMemoryStore, AsyncSqliteStore, AsyncStore, MemoryStore, UserIndex
from persession.wsgi import SessionMiddleware as WSGIMiddleware

SECRET = "security-secret"
OLD_SECRET = "security-old-secret"
STORE_KEY_SECRET = "security-store-key"
SRC = ROOT / "src" / "persession"

# -- the apps ------------------------------------------------------------------------------------------


def starlette_app(store: AsyncStore, **options: Any) -> ASGIMiddleware:
    """Starlette: /login?user=, /set?key=&value=, /get, /logout (persession.guard's login and logout)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from persession.guard import login, logout

    async def do_login(request: Request) -> JSONResponse:
        login(request.session, request.query_params["user"])  # type: ignore[arg-type]
        return JSONResponse({"ok": True})

    async def do_set(request: Request) -> JSONResponse:
        request.session[request.query_params["key"]] = request.query_params["value"]
        return JSONResponse({"ok": True})

    async def do_get(request: Request) -> JSONResponse:
        return JSONResponse(dict(request.session))

    async def do_logout(request: Request) -> JSONResponse:
        logout(request.session)  # type: ignore[arg-type]
        return JSONResponse({"ok": True})

    routes = [Route("/login", do_login), Route("/set", do_set), Route("/get", do_get), Route("/logout", do_logout)]
    options.setdefault("secret", SECRET)
    return ASGIMiddleware(Starlette(routes=routes), store=store, **options)


def flask_app(store: MemoryStore, **options: Any) -> Any:
    """Flask: the same four routes."""
    from flask import Flask, jsonify, request

    from persession.guard import login, logout
    from persession.wsgi import get_session

    app = Flask(__name__)

    @app.get("/login")
    def do_login() -> Any:
        login(get_session(request.environ), request.args["user"])
        return jsonify({"ok": True})

    @app.get("/set")
    def do_set() -> Any:
        get_session(request.environ)[request.args["key"]] = request.args["value"]
        return jsonify({"ok": True})

    @app.get("/get")
    def do_get() -> Any:
        return jsonify(dict(get_session(request.environ)))

    @app.get("/logout")
    def do_logout() -> Any:
        logout(get_session(request.environ))
        return jsonify({"ok": True})

    options.setdefault("secret", SECRET)
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, store=store, **options)  # type: ignore[method-assign]
    return app


def cookie_of(response: httpx.Response | Any) -> str | None:
    """The session cookie's value the response sets (None when it sets none, "" when it expires it)."""
    headers = response.headers.get_list("set-cookie") if hasattr(response.headers, "get_list") else None
    if headers is None:
        headers = response.headers.getlist("Set-Cookie")
    found = [h for h in headers if h.startswith("session=")]
    return found[0].split(";", 1)[0].partition("=")[2] if found else None


# -- 1. nothing secret in the logs ---------------------------------------------------------------------


class Secrets:
    """Everything that must never be logged: cookie values, ids as the cookie carries them, store ids."""

    def __init__(self, engine: SessionEngine) -> None:
        self.engine = engine
        self.values: set[str] = set()

    def add_cookie(self, value: str | None) -> None:
        if not value:
            return
        self.values.add(value)
        unsigned = self.engine.signer.unsign(value)
        if unsigned is not None:
            self.values.add(unsigned.sid)
            self.values.add(self.engine.store_id(unsigned.sid))


def leaked(records: list[logging.LogRecord], secrets: Secrets) -> list[str]:
    """The log records (as text: message, arguments, exception) that name any of ``secrets``."""
    found = []
    for record in records:
        text = " ".join([record.getMessage(), repr(record.args), record.exc_text or "", str(record.exc_info or "")])
        found += [f"{record.name}: {record.getMessage()}" for value in secrets.values if value in text]
    return found


def flow_requests(get: Callable[[str, str | None], tuple[int, str | None]], secrets: Secrets) -> int:
    """Log in, write, read, log out, then a tampered, an unknown and a replayed cookie; returns requests sent."""
    status, cookie = get("/login?user=alice", None)
    assert status == 200
    secrets.add_cookie(cookie)
    assert cookie
    for path in ("/set?key=colour&value=blue", "/get", "/login?user=alice"):
        status, again = get(path, cookie)
        assert status == 200
        secrets.add_cookie(again)
        cookie = again or cookie
    status, _ = get("/logout", cookie)
    assert status == 200
    tampered = cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB")
    unknown = secrets.engine.signer.sign(secrets.engine.signer.new_id())
    secrets.add_cookie(tampered)
    secrets.add_cookie(unknown)
    for bad in (tampered, unknown, cookie):  # the last one: replayed after logout
        status, fresh = get("/get", bad)
        assert status == 200
        secrets.add_cookie(fresh)
    return 9


@pytest.mark.anyio
@pytest.mark.parametrize("store_key", [None, STORE_KEY_SECRET], ids=["ids", "hashed-ids"])
async def test_session_ids_and_cookies_never_reach_the_logs(
    store_key: str | None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full flow at DEBUG (both shells, a malformed record too): no log record names an id or a cookie value."""
    options = {"store_key_secret": store_key}
    engine = SessionEngine(SessionConfig(secret=SECRET, **options))
    secrets = Secrets(engine)
    store = AsyncSqliteStore(tmp_path / "sessions.db")
    app = starlette_app(store, **options)
    caplog.set_level(logging.DEBUG)  # every logger, persession's included
    requests = 0
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
            answers: list[tuple[int, str | None]] = []

            async def send(path: str, cookie: str | None) -> None:
                headers = {"Cookie": f"session={cookie}"} if cookie else {}
                client.cookies.clear()
                response = await client.get(path, headers=headers)
                answers.append((response.status_code, cookie_of(response)))

            requests += await async_flow(send, answers, secrets)
            # A malformed record under an id the client has a valid cookie for.
            token = engine.signer.new_id()
            with contextlib.closing(sqlite3.connect(tmp_path / "sessions.db", isolation_level=None)) as raw:
                raw.execute(
                    "INSERT INTO persession_sessions VALUES (?, '{not json', 0, 0, 9e15)", (engine.store_id(token),)
                )
            planted = engine.signer.sign(token)
            secrets.add_cookie(planted)
            await send("/get", planted)
            requests += 1
            assert answers[-1][0] == 200
    finally:
        await store.close()

    flask_store = MemoryStore()
    client = flask_app(flask_store, **options).test_client(use_cookies=False)  # cookies are sent explicitly

    def flask_get(path: str, cookie: str | None) -> tuple[int, str | None]:
        response = client.get(path, headers={"Cookie": f"session={cookie}"} if cookie else {})
        return response.status_code, cookie_of(response)

    requests += flow_requests(flask_get, secrets)
    records = list(caplog.records)
    persession_records = [r for r in records if r.name.startswith("persession")]
    found = leaked(records, secrets)
    print(
        f"\n[security] store_key_secret={store_key is not None}: {requests} requests, {len(records)} log records"
        f" ({len(persession_records)} from persession), {len(secrets.values)} secret values, leaks: {len(found)}"
    )
    assert persession_records, "the flow logged nothing: the check would be empty"
    assert any(r.name == "persession.security" for r in records)
    assert not found, found


async def async_flow(
    send: Callable[[str, str | None], Any], answers: list[tuple[int, str | None]], secrets: Secrets
) -> int:
    """:func:`flow_requests` for an async sender (each answer lands in ``answers``)."""
    sent = 0

    async def get(path: str, cookie: str | None) -> tuple[int, str | None]:
        nonlocal sent
        await send(path, cookie)
        sent += 1
        return answers[-1]

    status, cookie = await get("/login?user=alice", None)
    assert status == 200
    assert cookie
    secrets.add_cookie(cookie)
    for path in ("/set?key=colour&value=blue", "/get", "/login?user=alice"):
        status, again = await get(path, cookie)
        assert status == 200
        secrets.add_cookie(again)
        cookie = again or cookie
    status, _ = await get("/logout", cookie)
    assert status == 200
    tampered = cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB")
    unknown = secrets.engine.signer.sign(secrets.engine.signer.new_id())
    secrets.add_cookie(tampered)
    secrets.add_cookie(unknown)
    for bad in (tampered, unknown, cookie):
        status, fresh = await get("/get", bad)
        assert status == 200
        secrets.add_cookie(fresh)
    return sent


# -- 2. no pickle ----------------------------------------------------------------------------------------

FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "jsonpickle", "marshal", "shelve"}


def test_no_pickle_marshal_or_shelve_in_src() -> None:
    """No module of src/ imports pickle, marshal or shelve (or their kin), directly or by name."""
    files = sorted(SRC.rglob("*.py"))
    offenders = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES
            ]
        pattern = r"""(import_module|__import__)\(\s*["'](pickle|_pickle|marshal|shelve|dill|cloudpickle)"""
        offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in re.finditer(pattern, text)]
    print(f"\n[security] {len(files)} modules of src/ scanned for pickle/marshal/shelve: {len(offenders)} found")
    assert len(files) > 10
    assert not offenders, offenders


# -- 3. constant-time checks -----------------------------------------------------------------------------


def test_signatures_are_checked_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unsigning a tampered cookie compares signatures with hmac.compare_digest, once per configured secret."""
    calls: list[tuple[Any, Any]] = []
    original = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(itsdangerous.signer.hmac, "compare_digest", counting)
    signer = ItsdangerousSigner([SECRET.encode(), OLD_SECRET.encode()])
    value = signer.sign(signer.new_id())
    assert signer.unsign(value) is not None
    good = len(calls)
    assert signer.unsign(value[:-2] + ("AA" if not value.endswith("AA") else "BB")) is None
    print(f"\n[security] compare_digest calls: {good} for a good cookie, {len(calls) - good} for a tampered one")
    assert good == 1
    assert len(calls) - good == 2  # every secret tried, each in constant time


# -- 4. store_key_secret across the stores ---------------------------------------------------------------


async def dump(kind: str, store: Any, context: dict[str, Any]) -> str:
    """Everything the store holds, as text: what a leaked dump would show."""
    if kind == "memory":
        return repr(vars(store._table)) if hasattr(store, "_table") else repr(vars(store))
    if kind == "sqlite":
        with contextlib.closing(sqlite3.connect(context["path"])) as raw:
            rows = raw.execute("SELECT * FROM persession_sessions").fetchall()
            rows += raw.execute("SELECT * FROM persession_sessions_users").fetchall()
        return repr(rows)
    if kind == "redis":
        server: RedisServer = context["server"]
        with server.client() as raw:
            keys = sorted(raw.scan_iter(match=f"{context['prefix']}*"))
            return repr([(key, raw.type(key), raw.dump(key)) for key in keys])
    documents = await store.collection.find({}).to_list(None)
    return repr(documents)


@contextlib.asynccontextmanager
async def open_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Any, dict]]:
    if kind == "memory":
        yield AsyncMemoryStore(), {}
    elif kind == "sqlite":
        path = tmp_path / "sessions.db"
        sqlite_store = AsyncSqliteStore(path)
        try:
            yield sqlite_store, {"path": path}
        finally:
            await sqlite_store.close()
    elif kind == "redis":
        from persession.stores.redis import AsyncRedisStore

        server: RedisServer = request.getfixturevalue("redis_server")
        prefix = unique_prefix("store-key")
        redis_store = AsyncRedisStore.from_url(server.url, prefix=prefix)
        try:
            yield redis_store, {"server": server, "prefix": prefix}
        finally:
            await redis_store.close()
            with server.client() as raw:
                keys = list(raw.scan_iter(match=f"{prefix}*"))
                if keys:
                    raw.delete(*keys)
    else:
        request.getfixturevalue("mongo_server")
        async with make_mongo_store("async", "store_key") as mongo_store:
            yield mongo_store, {}


STORE_KINDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis", marks=pytest.mark.server),
    pytest.param("mongo", id="mongo", marks=pytest.mark.server),
]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", STORE_KINDS)
async def test_store_key_secret_keeps_only_hashes_in_every_store(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """With store_key_secret the store holds only keyed hashes: a dump replayed as cookies finds nothing."""
    engine = SessionEngine(SessionConfig(secret=SECRET, store_key_secret=STORE_KEY_SECRET))
    async with open_store(kind, request, tmp_path) as (store, context):
        app = starlette_app(store, store_key_secret=STORE_KEY_SECRET)

        async def get(path: str, cookie: str | None, target: Any = app) -> httpx.Response:
            transport = httpx.ASGITransport(target)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.get(path, headers={"Cookie": f"session={cookie}"} if cookie else {})

        login = await get("/login?user=alice", None)
        cookie = cookie_of(login)
        assert cookie
        unsigned = engine.signer.unsign(cookie)
        assert unsigned is not None
        token, stored_as = unsigned.sid, engine.store_id(unsigned.sid)
        assert token != stored_as
        assert (await get("/set?key=colour&value=blue", cookie)).status_code == 200
        assert (await get("/get", cookie)).json() == {"user": "alice", "colour": "blue"}

        text = await dump(kind, store, context)
        assert stored_as in text
        assert token not in text  # the cookie's id is nowhere in the store
        assert await store.load(token) is None
        assert (await store.load(stored_as)) is not None
        if isinstance(store, UserIndex) or hasattr(store, "user_sessions"):
            assert [info.sid for info in await store.user_sessions("alice")] == [stored_as]

        # A leaked dump replayed as a cookie, even signed with the real secret: a fresh session.
        replayed = await get("/get", engine.signer.sign(stored_as))
        assert replayed.json() == {}

        # Rotating the signing secret keeps the session (same store key); the cookie is re-issued.
        rotated = starlette_app(store, secret=["a-newer-secret", SECRET], store_key_secret=STORE_KEY_SECRET)
        seen = await get("/get", cookie, rotated)
        assert seen.json() == {"user": "alice", "colour": "blue"}
        reissued = cookie_of(seen)
        assert reissued
        renewed = ItsdangerousSigner([b"a-newer-secret"]).unsign(reissued)
        assert renewed is not None
        assert renewed.sid == token  # the cookie's id, never the stored hash
        # A rolling session re-sends its cookie on every response: the same token too.
        rolling = starlette_app(store, store_key_secret=STORE_KEY_SECRET, rolling=True)
        rolled = cookie_of(await get("/get", cookie, rolling))
        assert rolled == cookie
        # Changing the store key loses every session (documented: it never rotates).
        rekeyed = starlette_app(store, store_key_secret="another-store-key")
        assert (await get("/get", cookie, rekeyed)).json() == {}

        assert (await get("/logout", cookie)).status_code == 200
        assert await store.load(stored_as) is None
    print(f"\n[security] store_key_secret on {kind}: the store holds {stored_as[:6]}..., never the cookie's id")


def test_store_key_secret_is_validated() -> None:
    """store_key_secret: refused with compat='express', equal to a signing secret, empty, or not text."""
    with pytest.raises(ConfigError, match="compat='express'") as express:
        SessionConfig(secret=SECRET, store_key_secret=STORE_KEY_SECRET, compat="express")
    assert express.value.option == "store_key_secret"
    with pytest.raises(ConfigError, match="differ from every signing secret"):
        SessionConfig(secret=[SECRET, OLD_SECRET], store_key_secret=OLD_SECRET)
    for bad in ("", b"", 42):
        with pytest.raises(ConfigError, match="non-empty"):
            SessionConfig(secret=SECRET, store_key_secret=bad)  # type: ignore[arg-type]
    assert SessionConfig(secret=SECRET, store_key_secret=b"bytes work too").store_key_secret == b"bytes work too"


def test_store_ids_are_shaped_like_session_ids() -> None:
    """A hashed id is 43 characters of [A-Za-z0-9_-], as every store's key layout expects; off, it is the id."""
    hashed = SessionEngine(SessionConfig(secret=SECRET, store_key_secret=STORE_KEY_SECRET))
    plain = SessionEngine(SessionConfig(secret=SECRET))
    token = hashed.signer.new_id()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", hashed.store_id(token))
    assert hashed.store_id(token) != token
    assert plain.store_id(token) == token


# -- 5. cookie flags behind a TLS-terminating proxy --------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "forwarded", "expect"),
    [
        pytest.param({"proxy": True}, "https", "Secure", id="proxy trusted, https"),
        pytest.param({"proxy": True}, "http", "not Secure", id="proxy trusted, http"),
        pytest.param({}, "https", "not Secure", id="header not trusted without proxy=True"),
        pytest.param({"secure": True}, None, "no cookie", id="secure=True over plain HTTP"),
        pytest.param({"secure": True, "proxy": True}, "https", "Secure", id="secure=True behind the proxy"),
        # proxy=N trusts the N proxies nearest the app: the Nth value from the right, not what the client wrote.
        pytest.param({"proxy": 1}, "https, http", "not Secure", id="proxy=1, the client wrote https"),
        pytest.param({"proxy": 1}, "http, https", "Secure", id="proxy=1, the proxy wrote https"),
        pytest.param({"proxy": True}, "https, http", "Secure", id="proxy=True trusts the leftmost"),
        pytest.param({"proxy": 2}, "https", "not Secure", id="proxy=2, one value only"),
    ],
)
def test_cookie_flags_behind_a_tls_terminating_proxy(
    options: dict[str, Any], forwarded: str | None, expect: str
) -> None:
    """X-Forwarded-Proto decides Secure only with proxy=True; secure=True never sends a cookie over plain HTTP."""
    client = flask_app(MemoryStore(), **options).test_client()
    headers = {"X-Forwarded-Proto": forwarded} if forwarded else {}
    response = client.get("/login?user=alice", headers=headers)
    cookies = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]
    print(f"\n[security] {options} X-Forwarded-Proto={forwarded}: {cookies}")
    if expect == "no cookie":
        assert cookies == []
        return
    assert len(cookies) == 1
    attributes = [part.strip() for part in cookies[0].split(";")]
    assert "HttpOnly" in attributes
    assert ("Secure" in attributes) is (expect == "Secure")


# -- 6. short secrets: one warning per process -------------------------------------------------------------

GOOD_SECRET_COMMAND = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
LONG = "a-long-enough-secret-of-32-bytes"  # exactly 32
LONG_TOO = b"another-secret-of-32-bytes-long!"


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a process that has not warned about a short secret yet (the flag is module-level)."""
    monkeypatch.setattr(persession.config, "_short_secret_warned", False, raising=False)


def security_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "persession.security"]


@pytest.mark.usefixtures("fresh_process")
def test_short_secrets_log_one_warning_per_process(caplog: pytest.LogCaptureFixture) -> None:
    """Two configs with short secrets log exactly one WARNING, naming the option and the fix, not the secrets."""
    caplog.set_level(logging.DEBUG, logger="persession")
    SessionConfig(secret="shortsecret-one")
    SessionConfig(secret=[LONG, "shortsecret-two"], store_key_secret="shortstorekey")
    records = security_warnings(caplog)
    assert [r.levelno for r in records] == [logging.WARNING]
    message = records[0].getMessage()
    print(f"\n[security] short-secret warning: {message}")
    assert GOOD_SECRET_COMMAND in message
    assert message.startswith("secret ")
    for value in ("shortsecret-one", "shortsecret-two", "shortstorekey"):
        assert value not in message
        assert value not in repr(records[0].args)


@pytest.mark.usefixtures("fresh_process")
@pytest.mark.parametrize(
    ("options", "named"),
    [
        pytest.param({"secret": "x"}, "secret", id="one short str"),
        pytest.param({"secret": b"short bytes"}, "secret", id="one short bytes"),
        pytest.param({"secret": [LONG, "old-and-short"]}, "secret[1]", id="an older secret in the rotation list"),
        pytest.param({"secret": LONG, "store_key_secret": "short-store-key"}, "store_key_secret", id="store key"),
        pytest.param({"secret": "short-express", "compat": "express"}, "secret", id="express mode"),
        pytest.param({"secret": "é" * 15}, "secret", id="30 bytes of UTF-8"),
    ],
)
def test_each_kind_of_short_secret_warns(options: dict[str, Any], named: str, caplog: pytest.LogCaptureFixture) -> None:
    """A short signing secret, an older one, a short store_key_secret, in express mode too: one WARNING naming it."""
    caplog.set_level(logging.WARNING, logger="persession.security")
    SessionConfig(**options)
    records = security_warnings(caplog)
    assert [r.levelno for r in records] == [logging.WARNING]
    message = records[0].getMessage()
    assert message.startswith(f"{named} ")
    assert GOOD_SECRET_COMMAND in message


@pytest.mark.usefixtures("fresh_process")
def test_secrets_of_32_bytes_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    """Secrets of 32 bytes or more, in every position and mode, log nothing."""
    import secrets as random_secrets

    caplog.set_level(logging.DEBUG, logger="persession")
    SessionConfig(secret=LONG)
    SessionConfig(secret=[random_secrets.token_urlsafe(32), LONG_TOO], store_key_secret="s" * 32)
    SessionConfig(secret=LONG_TOO, store_key_secret=b"k" * 40)
    SessionConfig(secret=["é" * 16, LONG], compat="express")  # 32 bytes of UTF-8
    assert security_warnings(caplog) == []
    assert persession.config._short_secret_warned is False


@pytest.mark.usefixtures("fresh_process")
def test_short_secret_warning_comes_from_the_middlewares_and_flask_secret_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each way in warns: the ASGI and WSGI middlewares' secret=, and Flask's SECRET_KEY through init_app."""
    from flask import Flask
    from starlette.applications import Starlette

    from persession.integrations.flask import init_app

    caplog.set_level(logging.WARNING, logger="persession.security")
    builders: list[Callable[[], object]] = [
        lambda: ASGIMiddleware(Starlette(), secret="asgi-short", store=AsyncMemoryStore()),
        lambda: WSGIMiddleware(Flask(__name__).wsgi_app, secret="wsgi-short", store=MemoryStore()),
    ]
    flask = Flask(__name__)
    flask.config["SECRET_KEY"] = "flask-short"
    builders.append(lambda: init_app(flask, store=MemoryStore()))
    for build in builders:
        persession.config._short_secret_warned = False
        caplog.clear()
        build()
        records = security_warnings(caplog)
        assert [r.levelno for r in records] == [logging.WARNING], build
        assert GOOD_SECRET_COMMAND in records[0].getMessage()
