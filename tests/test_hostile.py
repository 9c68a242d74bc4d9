"""Hostile input, tried systematically: cookies, headers, stored records, session values.

- **Property tests** (hypothesis) over the sans-IO core and both shells in
  process (ASGI called directly with hand-built scopes and raw ``bytes``
  headers, WSGI with environ dicts): random, oversized, non-UTF-8 and
  duplicated ``Cookie`` headers, tampered signatures, forged ids, ids we once
  signed but the store does not know (replayed after logout), and very many
  headers. The answer is never a 5xx, nothing raises, and no client-chosen id
  is ever adopted (stored, merged, touched, or sent back in a cookie). The
  shell runs are the bounded fuzzing runs: ``FUZZ_EXAMPLES`` cases each, the
  count printed.
- **Malformed records** planted in each real store (SQLite, Redis, MongoDB,
  and the connect-redis and connect-mongo layouts of express mode): invalid
  JSON, wrong types, missing fields, deep nesting, foreign layouts, pickles:
  each gives a fresh session and one "malformed" WARNING on
  ``persession.security``, never a 500 (not even on the next request), and
  never an unpickle: the planted pickle would create a file, which never
  appears.
- **Values the app sets**: a value JSON cannot encode raises
  :class:`~persession.NotSerializable` naming the key, inside the handler; a
  session over ``max_size`` gets a clean 500 from persession at response
  start (Starlette and Flask alike), with no cookie, an ERROR on
  ``persession``, and the store still holding the previous version.

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import math
import pickle
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _mongo import make_mongo_store, mongo_server_fixture  # noqa: F401  (the fixture)
from _redis import RedisServer, redis_server_fixture, redis_servers_fixture, unique_prefix  # noqa: F401
from persession import NotSerializable, Session, SessionConfig
from persession.asgi import SessionMiddleware as ASGIMiddleware
from persession.core import Action, SessionEngine
from persession.records import Change, Record
from persession.signing import ExpressSigner, ItsdangerousSigner, new_session_id
from persession.stores import AsyncMemoryStore, AsyncSqliteStore, AsyncStore, MemoryStore
from persession.wsgi import SessionMiddleware as WSGIMiddleware

SECRET = "hostile-secret"
OTHER_SECRET = "an-attackers-guess"
SIGNER = ItsdangerousSigner([SECRET.encode()])
FOREIGN_SIGNER = ItsdangerousSigner([OTHER_SECRET.encode()])
#: Cases of each bounded fuzzing run (a shell with random requests).
FUZZ_EXAMPLES = 2000
#: Cases of each core property test.
PROPERTY_EXAMPLES = 500
#: The one session the store knows before each case.
LEGIT_SID = new_session_id()
LEGIT_COOKIE = SIGNER.sign(LEGIT_SID)
#: Ids an attacker picks: they must never be adopted.
CHOSEN_IDS = ("A" * 43, "attacker-chosen-id", new_session_id(), "../../etc/passwd", "x" * 43)
#: Ids we once signed but the store does not know (replayed after logout, expired).
REPLAYED_IDS = (new_session_id(), new_session_id())
ACTIONS = ("none", "read", "write", "regenerate", "destroy", "touch", "clear")
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROPERTY = settings(
    max_examples=PROPERTY_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies --------------------------------------------------------------------------------------


def _flip(value: str, index: int) -> str:
    index %= len(value)
    replacement = "A" if value[index] != "A" else "B"
    return value[:index] + replacement + value[index + 1 :]


#: Cookie values an attacker would try, the legitimate one among them.
crafted_values = st.one_of(
    st.just(LEGIT_COOKIE),
    st.integers(0, 200).map(lambda i: _flip(LEGIT_COOKIE, i)),  # tampered id or signature
    st.integers(1, 80).map(lambda n: LEGIT_COOKIE[:n]),  # truncated
    st.just(LEGIT_COOKIE.rpartition(".")[0]),  # the id without its signature
    st.sampled_from(CHOSEN_IDS).map(lambda sid: f"{sid}.{LEGIT_COOKIE.rpartition('.')[2]}"),  # a stolen signature
    st.sampled_from(CHOSEN_IDS).map(FOREIGN_SIGNER.sign),  # signed with a guessed secret
    st.sampled_from(CHOSEN_IDS),  # a bare chosen id
    st.sampled_from(REPLAYED_IDS).map(SIGNER.sign),  # validly signed, unknown to the store
    st.just(LEGIT_COOKIE + "A" * 5000),  # oversized
    st.just(f'"{LEGIT_COOKIE}"'),  # quoted
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec="latin-1"), max_size=300),
)
cookie_names = st.sampled_from(["session", "session", "Session", " session", "session ", "other", "", "s:session"])


@st.composite
def cookie_header(draw: st.DrawFn) -> bytes:
    """One raw ``Cookie`` header: pairs, garbage, non-UTF-8 bytes, or a huge blob."""
    kind = draw(st.sampled_from(["pairs", "pairs", "pairs", "binary", "huge"]))
    if kind == "binary":
        return draw(st.binary(max_size=400))
    if kind == "huge":
        return b"session=" + b"A" * draw(st.integers(4000, 70_000))
    pairs = draw(st.lists(st.tuples(cookie_names, crafted_values), max_size=6))
    separator = draw(st.sampled_from(["; ", ";", " ; ", ";;", ","]))
    text = separator.join(f"{name}={value}" for name, value in pairs)
    return text.encode("utf-8", "surrogateescape") + draw(st.sampled_from([b"", b"\xff\xfe", b"\x00", b"\xc3("]))


@dataclass(frozen=True)
class Hostile:
    """One hostile request: its cookie headers, other headers, and what the app does with the session."""

    cookies: tuple[bytes, ...]
    other_headers: tuple[tuple[bytes, bytes], ...]
    forwarded_proto: bytes | None
    scheme: str
    action: str
    config: int


#: The configurations requests are tried against (index into this list).
CONFIGS: tuple[dict[str, Any], ...] = (
    {},
    {"rolling": True},
    {"secure": True},
    {"proxy": True, "save_uninitialized": True},
    {"resave": True, "max_age": None},
    {"secret": [SECRET, "an-old-secret"], "absolute_timeout": 3600},
)


@st.composite
def hostile_requests(draw: st.DrawFn) -> Hostile:
    many = draw(st.booleans()) and draw(st.booleans())  # a quarter of the cases: very many headers
    cookies = draw(st.lists(cookie_header(), max_size=200 if many else 4))
    other = draw(
        st.lists(
            st.tuples(
                st.sampled_from([b"x-forwarded-proto", b"host", b"upgrade", b"origin", b"x-junk", b"cookie2"]),
                st.binary(max_size=50),
            ),
            max_size=300 if many else 5,
        )
    )
    return Hostile(
        cookies=tuple(cookies),
        other_headers=tuple(other),
        forwarded_proto=draw(st.none() | st.binary(max_size=20) | st.sampled_from([b"https", b"http, https"])),
        scheme=draw(st.sampled_from(["http", "https"])),
        action=draw(st.sampled_from(ACTIONS)),
        config=draw(st.integers(0, len(CONFIGS) - 1)),
    )


def config_of(index: int) -> SessionConfig:
    options = {"secret": SECRET, **CONFIGS[index]}
    return SessionConfig(**options)


# -- a store that remembers every write --------------------------------------------------------------


@dataclass
class Writes:
    """The ids a request wrote (saved, merged, touched, deleted) in the store."""

    ids: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)


def seeded_record(now: float) -> Record:
    return Record({"user": "victim", "n": 1}, created=now - 10, accessed=now - 10, expires=now + 3600)


class RecordingStore(MemoryStore):
    """A memory store holding the legitimate session, recording the ids it is asked to write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = Writes()
        super().save(LEGIT_SID, seeded_record(time.time()))

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        self.writes.ids.add(sid)
        if replaces is not None:
            self.writes.deleted.add(replaces)
        super().save(sid, record, replaces=replaces)

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        self.writes.ids.add(sid)
        return super().merge(sid, change, expires)

    def touch(self, sid: str, expires: float) -> bool:
        self.writes.ids.add(sid)
        return super().touch(sid, expires)

    def delete(self, sid: str) -> None:
        self.writes.deleted.add(sid)
        super().delete(sid)


class AsyncRecordingStore(AsyncMemoryStore):
    """The asyncio twin of :class:`RecordingStore`."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = Writes()

    async def seed(self) -> None:
        await super().save(LEGIT_SID, seeded_record(time.time()))

    async def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        self.writes.ids.add(sid)
        if replaces is not None:
            self.writes.deleted.add(replaces)
        await super().save(sid, record, replaces=replaces)

    async def merge(self, sid: str, change: Change, expires: float) -> bool:
        self.writes.ids.add(sid)
        return await super().merge(sid, change, expires)

    async def touch(self, sid: str, expires: float) -> bool:
        self.writes.ids.add(sid)
        return await super().touch(sid, expires)

    async def delete(self, sid: str) -> None:
        self.writes.deleted.add(sid)
        await super().delete(sid)


def act(session: Session, action: str) -> None:
    """What the application does with its session."""
    if action == "read":
        session.get("user")
    elif action == "write":
        session["seen"] = session.get("seen", 0) + 1
    elif action == "regenerate":
        session.regenerate()
        session["user"] = "someone"
    elif action == "destroy":
        session.destroy()
    elif action == "touch":
        session.touch()
    elif action == "clear":
        session.clear()


def check_outcome(status: int, set_cookies: list[str], writes: Writes, config: SessionConfig) -> None:
    """No 5xx; no chosen or replayed id written or handed back in a cookie."""
    assert status < 500, status
    forbidden = set(CHOSEN_IDS) | set(REPLAYED_IDS)
    assert not (writes.ids & forbidden), writes.ids & forbidden
    assert writes.ids <= {LEGIT_SID} | {sid for sid in writes.ids if len(sid) == 43}
    ours = [header for header in set_cookies if header.startswith(f"{config.cookie_name}=")]
    assert len(ours) <= 1, ours
    for header in ours:
        value = header.split(";", 1)[0].partition("=")[2]
        if value:  # an empty value expires the cookie
            unsigned = SIGNER.unsign(value)
            assert unsigned is not None, header
            assert unsigned.sid not in forbidden
            assert unsigned.sid == LEGIT_SID or unsigned.sid in writes.ids


# -- 1. the core ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> SessionEngine:
    return SessionEngine(SessionConfig(secret=SECRET))


def test_open_never_raises_and_verifies_only_our_signatures(engine: SessionEngine) -> None:
    """engine.open on random header inputs never raises, and names only ids our secret signed."""
    tried = 0

    @PROPERTY
    @given(headers=st.one_of(st.none(), cookie_header(), st.text(), st.lists(cookie_header() | st.text(), max_size=50)))
    def run(headers: Any) -> None:
        nonlocal tried
        tried += 1
        opening = engine.open(headers)
        assert opening.sid in (None, LEGIT_SID, *REPLAYED_IDS)
        if opening.sid is not None:
            assert opening.present

    run()
    print(f"\n[hostile] engine.open: {tried} cases tried")
    assert tried >= PROPERTY_EXAMPLES // 2


def test_build_and_plan_never_adopt_an_unknown_id(engine: SessionEngine) -> None:
    """A verified id the store does not know gives a fresh session; its plan saves under a new server-made id."""
    tried = 0

    @PROPERTY
    @given(
        value=crafted_values,
        action=st.sampled_from(ACTIONS),
        status=st.sampled_from([200, 204, 302, 400, 404, 500, 503]),
        secure=st.booleans(),
    )
    def run(value: str, action: str, status: int, secure: bool) -> None:
        nonlocal tried
        tried += 1
        opening = engine.open(f"session={value}")
        session = engine.build(opening, None)  # the store knows nothing under that id
        assert session.id is None
        assert dict(session) == {}
        act(session, action)
        plan = engine.plan(session, opening, status=status, secure_request=secure)
        assert plan.sid not in set(CHOSEN_IDS) | set(REPLAYED_IDS) | {LEGIT_SID}
        assert plan.replaces is None
        if plan.action is not Action.NOTHING:
            assert plan.action is Action.SAVE
            assert plan.sid is not None
            assert len(plan.sid) == 43
        if plan.set_cookie and not plan.set_cookie.startswith("session=;"):
            unsigned = SIGNER.unsign(plan.set_cookie.split(";", 1)[0].partition("=")[2])
            assert unsigned is not None
            assert unsigned.sid == plan.sid

    run()
    print(f"\n[hostile] engine.build + plan on unknown ids: {tried} cases tried")
    assert tried >= PROPERTY_EXAMPLES // 2


# -- 2. the shells, in process: the bounded fuzzing runs -------------------------------------------


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app: does ``scope["path"]``'s action on the session, answers 200."""
    from persession.asgi import get_session

    act(get_session(scope), scope["path"].lstrip("/"))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def call_asgi(middleware: ASGIMiddleware, request: Hostile) -> tuple[int, list[str]]:
    headers = [(b"cookie", value) for value in request.cookies] + list(request.other_headers)
    if request.forwarded_proto is not None:
        headers.append((b"x-forwarded-proto", request.forwarded_proto))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": request.scheme,
        "path": f"/{request.action}",
        "raw_path": f"/{request.action}".encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await middleware(scope, receive, send)
    starts = [m for m in messages if m["type"] == "http.response.start"]
    assert len(starts) == 1, messages
    set_cookies = [v.decode("latin-1") for k, v in starts[0].get("headers", ()) if k.lower() == b"set-cookie"]
    return starts[0]["status"], set_cookies


def test_asgi_shell_survives_hostile_requests() -> None:
    """Bounded fuzzing of the ASGI shell: no 5xx, no exception, no client-chosen id adopted."""
    tried = 0
    statuses: dict[int, int] = {}

    @FUZZ
    @given(request=hostile_requests())
    def run(request: Hostile) -> None:
        nonlocal tried
        tried += 1
        store = AsyncRecordingStore()
        config = config_of(request.config)
        middleware = ASGIMiddleware(asgi_app, config=config, store=store)

        async def go() -> tuple[int, list[str]]:
            await store.seed()
            return await call_asgi(middleware, request)

        status, set_cookies = asyncio.run(go())
        statuses[status] = statuses.get(status, 0) + 1
        check_outcome(status, set_cookies, store.writes, config)

    run()
    print(f"\n[hostile] ASGI fuzzing: {tried} cases tried, statuses {statuses}")
    assert tried >= FUZZ_EXAMPLES // 2


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A bare WSGI app: does ``PATH_INFO``'s action on the session, answers 200."""
    from persession.wsgi import get_session

    act(get_session(environ), environ["PATH_INFO"].lstrip("/"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def call_wsgi(middleware: WSGIMiddleware, request: Hostile) -> tuple[int, list[str]]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": f"/{request.action}",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": None,
    }
    for name, value in request.other_headers:
        environ["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = value.decode("latin-1")
    if request.cookies:  # a WSGI server joins repeated Cookie headers, and hands over latin-1 text (PEP 3333)
        environ["HTTP_COOKIE"] = "; ".join(value.decode("latin-1") for value in request.cookies)
    if request.forwarded_proto is not None:
        environ["HTTP_X_FORWARDED_PROTO"] = request.forwarded_proto.decode("latin-1")
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        started.append((status, headers))
        return lambda _: None

    result = middleware(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    assert body
    assert len(started) == 1, started
    status, headers = started[0]
    return int(status[:3]), [value for name, value in headers if name.lower() == "set-cookie"]


def test_wsgi_shell_survives_hostile_requests() -> None:
    """Bounded fuzzing of the WSGI shell: no 5xx, no exception, no client-chosen id adopted."""
    tried = 0
    statuses: dict[int, int] = {}

    @FUZZ
    @given(request=hostile_requests())
    def run(request: Hostile) -> None:
        nonlocal tried
        tried += 1
        store = RecordingStore()
        config = config_of(request.config)
        status, set_cookies = call_wsgi(WSGIMiddleware(wsgi_app, config=config, store=store), request)
        statuses[status] = statuses.get(status, 0) + 1
        check_outcome(status, set_cookies, store.writes, config)

    run()
    print(f"\n[hostile] WSGI fuzzing: {tried} cases tried, statuses {statuses}")
    assert tried >= FUZZ_EXAMPLES // 2


@pytest.mark.parametrize(
    "cookies",
    [
        # Every character but the signature's last, whose low bits base64 ignores (the same signature).
        pytest.param(
            tuple(f"session={_flip(LEGIT_COOKIE, i % (len(LEGIT_COOKIE) - 1))}".encode() for i in range(10_000)),
            id="10000 headers",
        ),
        pytest.param((b"session=" + b"\xff" * 1_000_000,), id="1 MB non-UTF-8 header"),
        pytest.param((("; ".join(f"session={v}" for v in CHOSEN_IDS * 2000)).encode(),), id="10000 duplicates"),
    ],
)
def test_extreme_headers_get_a_fresh_session(cookies: tuple[bytes, ...]) -> None:
    """Ten thousand Cookie headers, a megabyte of non-UTF-8, or ten thousand duplicates: a fresh session, no 5xx."""
    request = Hostile(cookies, (), None, "http", "write", 0)
    store = AsyncRecordingStore()
    middleware = ASGIMiddleware(asgi_app, config=config_of(0), store=store)

    async def go() -> tuple[int, list[str]]:
        await store.seed()
        return await call_asgi(middleware, request)

    began = time.perf_counter()
    status, set_cookies = asyncio.run(go())
    wsgi_status, wsgi_cookies = call_wsgi(
        WSGIMiddleware(wsgi_app, config=config_of(0), store=RecordingStore()), request
    )
    print(
        f"\n[hostile] {sum(map(len, cookies))} bytes of Cookie headers: answered in {time.perf_counter() - began:.3f}s"
    )
    assert status == wsgi_status == 200
    check_outcome(status, set_cookies, store.writes, config_of(0))
    assert LEGIT_SID not in store.writes.ids  # none of the tampered copies verified
    assert len(store.writes.ids) == 1  # the fresh session
    assert len(wsgi_cookies) == 1


# -- 3. malformed records in the real stores --------------------------------------------------------


class CreatesFile:
    """Pickled, this object's loading calls ``open(path, "w")``: proof of an unpickle is the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (builtins.open, (str(self.path), "w"))


def armed_pickle(path: Path) -> bytes:
    return pickle.dumps(CreatesFile(path))


def test_the_planted_pickle_is_armed(tmp_path: Path) -> None:
    """Sanity check of the bait: unpickling it does create the file (so its absence below means something)."""
    canary = tmp_path / "canary"
    opened = pickle.loads(armed_pickle(canary))  # noqa: S301  (our own bait, to prove it works)
    opened.close()
    assert canary.exists()


@dataclass
class Planted:
    """A store under test, and how to plant a raw record in it."""

    store: AsyncStore
    plant: Callable[[str, str, Path], Awaitable[None]]
    kinds: tuple[str, ...]
    #: The dialect: persession's own, or express-session's (the connect-* layouts).
    signer: ItsdangerousSigner | ExpressSigner = SIGNER
    options: dict[str, Any] = field(default_factory=dict)


SQLITE_KINDS = ("invalid-json", "not-an-object", "wrong-types", "empty", "deep", "infinite", "pickle", "pickle-text")
REDIS_KINDS = ("invalid-json", "wrong-types", "missing-fields", "deep", "foreign-string", "not-a-hash", "pickle")
#: Records a rolling load refreshes in the same statement, which makes them sound (SQLite's
#: ``UPDATE ... RETURNING`` replaces an infinite expiry): those are checked without rolling only.
HEALED_BY_ROLLING = frozenset({"infinite"})
MONGO_KINDS = ("invalid-json", "wrong-types", "missing-fields", "foreign-connect-mongo", "pickle", "pickle-value")


def _sqlite_row(kind: str, bait: Path, now: float) -> tuple[Any, Any, Any, Any]:
    later = now + 3600
    rows: dict[str, tuple[Any, Any, Any, Any]] = {
        "invalid-json": ("{not json", now, now, later),
        "not-an-object": ("[1, 2]", now, now, later),
        "wrong-types": ("{}", "yesterday", now, "tomorrow"),
        "empty": ("", now, now, later),
        "deep": ("[" * 100_000 + "]" * 100_000, now, now, later),
        "infinite": ('{"user": "forever"}', now, now, math.inf),
        "pickle": (armed_pickle(bait), now, now, later),
        "pickle-text": (armed_pickle(bait).decode("latin-1"), now, now, later),
    }
    return rows[kind]


@contextlib.asynccontextmanager
async def sqlite_planted(tmp_path: Path) -> AsyncIterator[Planted]:
    path = tmp_path / "sessions.db"
    store = AsyncSqliteStore(path)
    await store.load("warm-up")  # creates the table

    async def plant(sid: str, kind: str, bait: Path) -> None:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as raw:
            raw.execute(
                "INSERT INTO persession_sessions VALUES (?, ?, ?, ?, ?)", (sid, *_sqlite_row(kind, bait, time.time()))
            )

    try:
        yield Planted(store, plant, SQLITE_KINDS)
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def redis_planted(server: RedisServer) -> AsyncIterator[Planted]:
    from persession.stores.redis import AsyncRedisStore

    prefix = unique_prefix("hostile")
    store = AsyncRedisStore.from_url(server.url, prefix=prefix)

    async def plant(sid: str, kind: str, bait: Path) -> None:
        now = time.time()
        meta = {"created": repr(now), "accessed": repr(now), "expires": repr(now + 3600)}
        key = prefix + sid
        with server.client() as raw:
            if kind == "foreign-string":  # connect-redis: the session's JSON text in a string
                raw.set(key, json.dumps({"cookie": {"originalMaxAge": 1000}, "user": "node"}), ex=3600)
            elif kind == "not-a-hash":  # Flask-Session's format: a pickle in a string
                raw.set(key, armed_pickle(bait), ex=3600)
            else:
                fields: dict[str, Any] = {
                    "invalid-json": {**meta, ".user": b"{not json"},
                    "wrong-types": {**meta, "created": "yesterday", ".user": '"x"'},
                    "missing-fields": {".user": '"x"', "expires": repr(now + 3600)},
                    "deep": {**meta, ".user": "[" * 100_000 + "]" * 100_000},
                    "pickle": {**meta, ".user": armed_pickle(bait)},
                }[kind]
                raw.hset(key, mapping=fields)
                raw.expire(key, 3600)

    try:
        yield Planted(store, plant, REDIS_KINDS)
    finally:
        await store.close()
        with server.client() as raw:
            keys = list(raw.scan_iter(match=f"{prefix}*"))
            if keys:
                raw.delete(*keys)


@contextlib.asynccontextmanager
async def mongo_planted() -> AsyncIterator[Planted]:
    from bson import Binary

    async with make_mongo_store("async", "hostile") as store:
        await store.load("warm-up")  # creates the indexes
        collection = store.collection

        async def plant(sid: str, kind: str, bait: Path) -> None:
            now = time.time()
            expires = datetime.now(timezone.utc) + timedelta(hours=1)
            good: dict[str, Any] = {"data": {}, "created": now, "accessed": now, "expires": expires}
            good["expires_ts"] = now + 3600
            document: dict[str, Any] = {
                "invalid-json": {**good, "data": "{not json"},
                "wrong-types": {**good, "created": "yesterday", "expires_ts": "tomorrow"},
                "missing-fields": {"expires": expires, "data": {"user": "x"}},
                "foreign-connect-mongo": {"expires": expires, "session": json.dumps({"cookie": {}, "user": "node"})},
                "pickle": {**good, "data": Binary(armed_pickle(bait))},
                "pickle-value": {**good, "data": {"user": Binary(armed_pickle(bait))}},
            }[kind]
            await collection.insert_one({"_id": sid, **document})

        yield Planted(store, plant, MONGO_KINDS)


CONNECT_REDIS_KINDS = ("invalid-json", "not-an-object", "no-cookie-object", "deep", "pickle", "a-hash")
CONNECT_MONGO_KINDS = ("invalid-json", "no-cookie-object", "deep", "pickle", "session-not-a-string")
EXPRESS_SECRET = "hostile-express-secret"


def _express_text(kind: str, bait: Path) -> str | bytes:
    """A connect-* session value that is not an express-session record."""
    texts: dict[str, str | bytes] = {
        "invalid-json": "{not json",
        "not-an-object": "[1, 2]",
        "no-cookie-object": json.dumps({"user": "node"}),
        "deep": "[" * 100_000 + "]" * 100_000,
        "pickle": armed_pickle(bait),
    }
    return texts[kind]


@contextlib.asynccontextmanager
async def redis_connect_planted(server: RedisServer) -> AsyncIterator[Planted]:
    from persession.exceptions import ConfigError
    from persession.stores.redis import AsyncRedisStore

    prefix = unique_prefix("hostile-connect")
    try:
        store = AsyncRedisStore.from_url(server.url, prefix=prefix, layout="connect-redis")  # type: ignore[call-arg,unused-ignore]
    except (TypeError, ConfigError) as error:
        pytest.skip(f"no connect-redis layout: {error}")

    async def plant(sid: str, kind: str, bait: Path) -> None:
        with server.client() as raw:
            if kind == "a-hash":
                raw.hset(prefix + sid, mapping={"cookie": "{}", "user": '"x"'})
                raw.expire(prefix + sid, 3600)
            else:
                raw.set(prefix + sid, _express_text(kind, bait), ex=3600)

    try:
        yield Planted(
            store, plant, CONNECT_REDIS_KINDS, ExpressSigner([EXPRESS_SECRET.encode()]), {"compat": "express"}
        )
    finally:
        await store.close()
        with server.client() as raw:
            keys = list(raw.scan_iter(match=f"{prefix}*"))
            if keys:
                raw.delete(*keys)


@contextlib.asynccontextmanager
async def mongo_connect_planted() -> AsyncIterator[Planted]:
    from bson import Binary

    from persession.exceptions import ConfigError
    from persession.stores.mongo import AsyncMongoStore

    async with make_mongo_store("async", "hostile_connect") as own:
        try:
            store = AsyncMongoStore(own.collection, layout="connect-mongo")  # type: ignore[call-arg,unused-ignore]
        except (TypeError, ConfigError) as error:
            pytest.skip(f"no connect-mongo layout: {error}")
        await store.load("warm-up")  # creates the TTL index

        async def plant(sid: str, kind: str, bait: Path) -> None:
            expires = datetime.now(timezone.utc) + timedelta(hours=1)
            document: dict[str, Any] = {"_id": sid, "expires": expires}
            if kind == "session-not-a-string":
                document["session"] = {"cookie": {}, "user": "node"}  # connect-mongo's stringify: false
            else:
                text = _express_text(kind, bait)
                document["session"] = Binary(text) if isinstance(text, bytes) else text
            await store.collection.insert_one(document)

        yield Planted(
            store, plant, CONNECT_MONGO_KINDS, ExpressSigner([EXPRESS_SECRET.encode()]), {"compat": "express"}
        )


def counter_app(store: AsyncStore, **options: Any) -> ASGIMiddleware:
    """Starlette: /counter increments session["counter"]."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def counter(request: Request) -> JSONResponse:
        request.session["counter"] = request.session.get("counter", 0) + 1
        return JSONResponse({"counter": request.session["counter"], "keys": sorted(request.session)})

    secret = EXPRESS_SECRET if options.get("compat") == "express" else SECRET
    return ASGIMiddleware(Starlette(routes=[Route("/counter", counter)]), secret=secret, store=store, **options)


def cookie_of(response: httpx.Response) -> str | None:
    found = [h for h in response.headers.get_list("set-cookie") if h.startswith("session=")]
    return found[0].split(";", 1)[0].partition("=")[2] if found else None


async def exercise_malformed(planted: Planted, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Plant each kind of malformed record, then send requests naming it: the checks of the module docs."""
    report = []
    for rolling in (False, True):
        app = counter_app(planted.store, rolling=rolling, **planted.options)
        signer = planted.signer
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for kind in planted.kinds:
                if rolling and kind in HEALED_BY_ROLLING:
                    continue
                bait = tmp_path / f"unpickled-{kind}-{rolling}"
                sid = signer.new_id()
                await planted.plant(sid, kind, bait)
                label = f"{kind} (rolling={rolling})"
                for attempt in range(2):  # the second time too: never a 500 on every request
                    caplog.clear()
                    with caplog.at_level(logging.DEBUG, logger="persession"):
                        first = await client.get("/counter", headers={"Cookie": f"session={signer.sign(sid)}"})
                    assert first.status_code == 200, (label, attempt, first.status_code, first.text[:200])
                    assert first.json() == {"counter": 1, "keys": ["counter"]}, label
                    fresh = cookie_of(first)
                    assert fresh is not None, label
                    fresh_sid = signer.unsign(fresh)
                    assert fresh_sid is not None
                    assert fresh_sid.sid != sid, label
                    # Each rejected cookie is also logged at DEBUG; the WARNINGs are what an operator sees.
                    security = [
                        r for r in caplog.records if r.name == "persession.security" and r.levelno >= logging.WARNING
                    ]
                    malformed = [r for r in security if "malformed" in r.getMessage()]
                    # The first request meets the record as planted; a rolling load may have
                    # expired it since (then the second sees no record at all).
                    assert len(malformed) == (1 if attempt == 0 else len(malformed) and 1), (label, attempt)
                    assert len(security) <= 2, (label, [r.getMessage() for r in security])
                    assert all(r.levelno == logging.WARNING for r in security), label
                    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], label
                    assert sid not in " ".join(r.getMessage() for r in caplog.records), label
                    second = await client.get("/counter", headers={"Cookie": f"session={fresh}"})
                    assert second.status_code == 200, label
                    assert second.json()["counter"] == 2, label
                assert not bait.exists(), f"{label}: the planted pickle was loaded"
                report.append(label)
    return report


@pytest.mark.anyio
async def test_malformed_sqlite_records_give_a_fresh_session(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Malformed SQLite rows: a fresh session, one 'malformed' security WARNING, no 500, never an unpickle."""
    async with sqlite_planted(tmp_path) as planted:
        report = await exercise_malformed(planted, tmp_path, caplog)
    print(f"\n[hostile] SQLite malformed records survived: {len(report)} cases: {report}")
    assert len(report) == 2 * len(SQLITE_KINDS) - len(HEALED_BY_ROLLING)


@pytest.mark.server
@pytest.mark.anyio
async def test_malformed_redis_records_give_a_fresh_session(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Malformed Redis keys: a fresh session, one 'malformed' security WARNING, no 500, never an unpickle."""
    async with redis_planted(redis_server) as planted:
        report = await exercise_malformed(planted, tmp_path, caplog)
    print(f"\n[hostile] Redis malformed records survived: {len(report)} cases: {report}")
    assert len(report) == 2 * len(REDIS_KINDS)


@pytest.mark.server
@pytest.mark.anyio
async def test_malformed_mongo_documents_give_a_fresh_session(
    mongo_server: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Malformed MongoDB documents: a fresh session, one 'malformed' security WARNING, no 500, never an unpickle."""
    async with mongo_planted() as planted:
        report = await exercise_malformed(planted, tmp_path, caplog)
    print(f"\n[hostile] MongoDB malformed documents survived: {len(report)} cases: {report}")
    assert len(report) == 2 * len(MONGO_KINDS)


# -- 4. values the application sets ------------------------------------------------------------------

UNSERIALISABLE: list[Any] = [object(), {1, 2}, b"bytes", math.nan, [math.inf], "\ud800", {"nested": {"x": object()}}]


def starlette_value_app(store: AsyncStore, **options: Any) -> ASGIMiddleware:
    """Starlette: /set?kind=N sets a bad value and reports what the handler caught; /big writes a big value."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def set_bad(request: Request) -> JSONResponse:
        try:
            request.session["bad"] = UNSERIALISABLE[int(request.query_params["kind"])]
        except NotSerializable as error:
            return JSONResponse({"caught": type(error).__name__, "key": error.key, "message": str(error)})
        return JSONResponse({"caught": None})

    async def big(request: Request) -> JSONResponse:
        request.session["blob"] = "x" * int(request.query_params["size"])
        return JSONResponse({"ok": True})

    routes = [Route("/set", set_bad), Route("/big", big)]
    return ASGIMiddleware(Starlette(routes=routes), secret=SECRET, store=store, **options)


def flask_value_app(store: MemoryStore, **options: Any) -> Any:
    """Flask: the same two routes."""
    from flask import Flask, jsonify, request

    from persession.wsgi import get_session

    app = Flask(__name__)

    @app.get("/set")
    def set_bad() -> Any:
        try:
            get_session(request.environ)["bad"] = UNSERIALISABLE[int(request.args["kind"])]
        except NotSerializable as error:
            return jsonify({"caught": type(error).__name__, "key": error.key, "message": str(error)})
        return jsonify({"caught": None})

    @app.get("/big")
    def big() -> Any:
        get_session(request.environ)["blob"] = "x" * int(request.args["size"])
        return jsonify({"ok": True})

    app.wsgi_app = WSGIMiddleware(app.wsgi_app, secret=SECRET, store=store, **options)  # type: ignore[method-assign]
    return app


@pytest.mark.anyio
@pytest.mark.parametrize("kind", range(len(UNSERIALISABLE)))
async def test_not_serializable_is_raised_in_the_handler(kind: int) -> None:
    """A value JSON cannot store raises NotSerializable naming the key inside the handler, under Starlette and Flask."""
    store = AsyncMemoryStore()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(starlette_value_app(store)), base_url="http://test"
    ) as client:
        starlette = (await client.get("/set", params={"kind": kind})).json()
    flask = flask_value_app(MemoryStore()).test_client().get("/set", query_string={"kind": kind}).get_json()
    print(f"\n[hostile] {UNSERIALISABLE[kind]!r}: {starlette['message']}")
    for seen in (starlette, flask):
        assert seen["caught"] == "NotSerializable"
        assert seen["key"] == "bad"
        assert "session['bad']" in seen["message"]


@pytest.mark.anyio
async def test_too_large_under_starlette_is_a_clean_500_and_keeps_the_stored_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Over max_size under Starlette: persession answers a clean 500 at response start, no cookie, store unchanged."""
    store = AsyncMemoryStore()
    app = starlette_value_app(store, max_size=1024)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        small = await client.get("/big", params={"size": 10})
        cookie = cookie_of(small)
        assert cookie is not None
        unsigned = SIGNER.unsign(cookie)
        assert unsigned is not None
        before = await store.load(unsigned.sid)
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="persession"):
            large = await client.get("/big", params={"size": 5000}, headers={"Cookie": f"session={cookie}"})
        after = await store.load(unsigned.sid)
    errors = [r.getMessage() for r in caplog.records if r.name == "persession" and r.levelno == logging.ERROR]
    print(f"\n[hostile] Starlette, session over max_size: {large.status_code} {large.text!r}; logged: {errors}")
    assert large.status_code == 500
    assert "set-cookie" not in large.headers
    assert "Traceback" not in large.text
    assert errors
    assert "over the limit of 1024" in errors[0]
    assert cookie not in errors[0]
    assert unsigned.sid not in errors[0]
    assert before is not None
    assert after is not None
    assert after.data == before.data == {"blob": "x" * 10}


def test_too_large_under_flask_is_a_clean_500_and_keeps_the_stored_version(caplog: pytest.LogCaptureFixture) -> None:
    """Over max_size under Flask: persession answers a clean 500 at start_response, no cookie, store unchanged."""
    store = MemoryStore()
    client = flask_value_app(store, max_size=1024).test_client()
    small = client.get("/big", query_string={"size": 10})
    cookie = client.get_cookie("session")
    assert small.status_code == 200
    assert cookie is not None
    unsigned = SIGNER.unsign(cookie.value)
    assert unsigned is not None
    before = store.load(unsigned.sid)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="persession"):
        large = client.get("/big", query_string={"size": 5000})
    after = store.load(unsigned.sid)
    errors = [r.getMessage() for r in caplog.records if r.name == "persession" and r.levelno == logging.ERROR]
    print(f"\n[hostile] Flask, session over max_size: {large.status_code} {large.text!r}; logged: {errors}")
    assert large.status_code == 500
    assert "Set-Cookie" not in large.headers
    assert "Traceback" not in large.text
    assert errors
    assert "over the limit of 1024" in errors[0]
    assert before is not None
    assert after is not None
    assert after.data == before.data == {"blob": "x" * 10}


@pytest.mark.anyio
async def test_a_nested_value_gone_bad_is_a_clean_500_not_a_half_write(caplog: pytest.LogCaptureFixture) -> None:
    """A value made unserialisable in place (then mark_modified) fails at response start: clean 500, store intact."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def cart(request: Request) -> JSONResponse:
        session = request.session
        if "cart" not in session:
            session["cart"] = [1]
        else:
            session["cart"].append(object())  # not JSON, and not seen by __setitem__
            session.mark_modified()  # type: ignore[attr-defined]
        return JSONResponse({"ok": True})

    store = AsyncMemoryStore()
    app = ASGIMiddleware(Starlette(routes=[Route("/cart", cart)]), secret=SECRET, store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        first = await client.get("/cart")
        cookie = cookie_of(first)
        assert cookie is not None
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="persession"):
            second = await client.get("/cart", headers={"Cookie": f"session={cookie}"})
    unsigned = SIGNER.unsign(cookie)
    assert unsigned is not None
    record = await store.load(unsigned.sid)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    print(f"\n[hostile] nested value gone bad: {second.status_code}; logged: {errors}")
    assert second.status_code == 500
    assert any("session['cart']" in message for message in errors)
    assert record is not None
    assert record.data == {"cart": [1]}


@pytest.mark.server
@pytest.mark.anyio
async def test_malformed_connect_redis_values_give_a_fresh_session(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The connect-redis layout: values that are not express-session records give a fresh session, never a 500."""
    async with redis_connect_planted(redis_server) as planted:
        report = await exercise_malformed(planted, tmp_path, caplog)
    print(f"\n[hostile] connect-redis malformed values survived: {len(report)} cases: {report}")
    assert len(report) == 2 * len(CONNECT_REDIS_KINDS)


@pytest.mark.server
@pytest.mark.anyio
async def test_malformed_connect_mongo_documents_give_a_fresh_session(
    mongo_server: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The connect-mongo layout: documents that are not express-session records give a fresh session, never a 500."""
    async with mongo_connect_planted() as planted:
        report = await exercise_malformed(planted, tmp_path, caplog)
    print(f"\n[hostile] connect-mongo malformed documents survived: {len(report)} cases: {report}")
    assert len(report) == 2 * len(CONNECT_MONGO_KINDS)
