"""One login shared by a Python service (persession, express mode) and a Node one (express-session).

Both sides are real processes on 127.0.0.1: ``tests/apps/express_compat_app.py``
under uvicorn, and ``tests/node/app.js`` (express-session 1.18.0 with
connect-redis 8 or connect-mongo 5, pinned in ``tests/node/package-lock.json``)
under node, on one store: a Redis server (connect-redis' JSON strings, key
``<prefix><id>``) or a MongoDB-wire server (connect-mongo's documents). A
``Browser`` carries the cookie from one to the other by hand, as a browser
would behind one nginx (cookies ignore the port).

Without node or the packages (``npm ci --prefix tests/node``) these tests skip,
and fail under ``CI``.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from _mongo import mongo_server_fixture  # noqa: F401  (the fixture)
from _node import node_app, node_eval, require_node
from _redis import redis_server_fixture, redis_servers_fixture  # noqa: F401  (the fixtures)
from _servers import ServerProcess, uvicorn_server
from persession.codecs import iso_date, parse_iso_date
from persession.signing import ExpressSigner

pytestmark = [pytest.mark.server]

NEW = "new-secret"
OLD = "old-secret"
MAX_AGE = 3600
KINDS = ["redis", "mongo"]


class Browser:
    """One browser's cookie for ``name``, sent to whichever server it talks to (cookies ignore ports)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.value: str | None = None
        #: The ``Set-Cookie`` values for ``name`` of the last response.
        self.last_set: list[str] = []

    def get(self, server: ServerProcess, path: str, **params: str) -> Any:
        """GET ``path`` with the cookie, keep what the response sets, and return its JSON."""
        headers = {"Cookie": f"{self.name}={self.value}"} if self.value is not None else {}
        response = httpx.get(f"{server.url}{path}", params=params, headers=headers, timeout=15)
        assert response.status_code == 200, response.text
        self.last_set = []
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            if name != self.name:
                continue
            value, _, attributes = rest.partition(";")
            self.last_set.append(value)
            gone = "max-age=0" in attributes.lower() or "01 jan 1970" in attributes.lower()
            self.value = None if gone else value
        return response.json()

    @property
    def sid(self) -> str:
        """The session id the cookie names (verified with the test secrets)."""
        assert self.value is not None
        unsigned = ExpressSigner([NEW.encode(), OLD.encode()]).unsign(self.value)
        assert unsigned is not None
        return unsigned.sid


@dataclass
class Stack:
    """A Python and a Node service on one store, configured alike."""

    kind: str
    python: ServerProcess
    node: ServerProcess
    cookie_name: str
    raw: Any  # a redis.Redis, or a pymongo Collection
    prefix: str = ""
    closers: list[Any] = field(default_factory=list)

    def browser(self) -> Browser:
        return Browser(self.cookie_name)

    def stored(self, sid: str) -> tuple[dict[str, Any], float] | None:
        """The stored JSON of ``sid`` and the store's own expiry for it (Redis TTL, Mongo ``expires``)."""
        if self.kind == "redis":
            text = self.raw.get(self.prefix + sid)
            if text is None:
                return None
            return json.loads(text), time.time() + self.raw.pttl(self.prefix + sid) / 1000
        document = self.raw.find_one({"_id": sid})
        if document is None:
            return None
        return json.loads(document["session"]), document["expires"].timestamp()

    def age(self, sid: str, seconds: float) -> None:
        """Make ``sid`` expire in ``seconds``, in the JSON and in the store alike (an older session)."""
        found = self.stored(sid)
        assert found is not None
        document, _ = found
        expires = time.time() + seconds
        document["cookie"]["expires"] = iso_date(expires)
        text = json.dumps(document, separators=(",", ":"))
        if self.kind == "redis":
            self.raw.set(self.prefix + sid, text, px=int(seconds * 1000))
        else:
            moment = datetime.fromtimestamp(expires, tz=timezone.utc)
            self.raw.update_one({"_id": sid}, {"$set": {"session": text, "expires": moment}})


class Stacks:
    """Stacks by (store kind, variant), started on first use and stopped at the end of the module."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.exit = contextlib.ExitStack()
        self.cache: dict[tuple[str, str], Stack] = {}

    def get(self, kind: str, variant: str = "main") -> Stack:
        key = (kind, variant)
        if key not in self.cache:
            self.cache[key] = self._start(kind, variant)
        return self.cache[key]

    def _start(self, kind: str, variant: str) -> Stack:
        require_node()
        cookie_name = "XXX:sess" if variant == "colon" else "connect.sid"
        rolling = variant == "rolling"
        secrets = [NEW, OLD]
        options = {"cookie_name": cookie_name, "max_age": MAX_AGE, "rolling": rolling}
        env = {"PERSESSION_TEST_SECRET": json.dumps(secrets), "PERSESSION_TEST_OPTIONS": json.dumps(options)}
        node_options: dict[str, Any] = {}
        prefix = ""
        if kind == "redis":
            server = self.request.getfixturevalue("redis_server")
            prefix = f"sess-{uuid.uuid4().hex[:10]}:"
            raw: Any = self.exit.enter_context(server.client())
            self.exit.callback(lambda: [raw.delete(k) for k in raw.scan_iter(f"{prefix}*")])
            env["PERSESSION_TEST_STORE"] = f"{server.url}?layout=connect-redis"
            env["PERSESSION_TEST_PREFIX"] = prefix
            node_options = {"redis_url": server.url, "prefix": prefix}
        else:
            from pymongo import MongoClient

            server = self.request.getfixturevalue("mongo_server")
            database = f"express_{uuid.uuid4().hex[:12]}"
            client: MongoClient[dict[str, Any]] = MongoClient(server.url, tz_aware=True)
            self.exit.callback(client.close)
            self.exit.callback(client.drop_database, database)
            raw = client[database]["sessions"]
            url = server.url.rstrip("/")
            env["PERSESSION_TEST_STORE"] = f"{url}/{database}?layout=connect-mongo"
            node_options = {"mongo_url": server.url, "mongo_db": database}
        python = self.exit.enter_context(uvicorn_server("express_compat_app:app", env=env))
        node = self.exit.enter_context(
            node_app(
                kind,
                secrets=secrets,
                cookie_name=cookie_name,
                rolling=rolling,
                max_age_ms=MAX_AGE * 1000,
                **node_options,
            )
        )
        return Stack(kind, python, node, cookie_name, raw, prefix)


@pytest.fixture(scope="module")
def stacks(request: pytest.FixtureRequest) -> Iterator[Stacks]:
    """The module's stacks, stopped at its end."""
    opened = Stacks(request)
    with opened.exit:
        yield opened


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The store both services share: ``redis`` (connect-redis) or ``mongo`` (connect-mongo)."""
    return str(request.param)


def _agree(stack: Stack, sid: str) -> tuple[float, float]:
    """The stored JSON's ``cookie.expires`` and the store's expiry for ``sid``."""
    found = stack.stored(sid)
    assert found is not None
    document, store_expiry = found
    json_expiry = parse_iso_date(document["cookie"]["expires"])
    assert json_expiry is not None
    return json_expiry, store_expiry


# -- login, data, logout -----------------------------------------------------------------------------


def test_node_login_is_seen_by_python_and_its_changes_by_node(stacks: Stacks, kind: str) -> None:
    """A login on Node is a login on Python, with the data; what Python changes, Node then sees."""
    stack = stacks.get(kind)
    browser = stack.browser()
    assert browser.get(stack.node, "/login", user="alice") == {"user": "alice"}
    browser.get(stack.node, "/set", key="theme", value="dark")
    seen = browser.get(stack.python, "/whoami")
    assert seen["user"] == "alice"
    assert seen["session"] == {"passport": {"user": "alice"}, "theme": "dark"}
    assert seen["id"] == browser.sid
    browser.get(stack.python, "/set", key="theme", value="light")
    browser.get(stack.python, "/set", key="lang", value="fr")
    after = browser.get(stack.node, "/whoami")
    assert after["user"] == "alice"
    assert after["session"] == {"passport": {"user": "alice"}, "theme": "light", "lang": "fr"}
    found = stack.stored(browser.sid)
    assert found is not None
    assert next(iter(found[0])) == "cookie"


def test_python_login_is_seen_by_node(stacks: Stacks, kind: str) -> None:
    """A login on Python (guard.login: passport's shape, a new id) is a login on Node."""
    stack = stacks.get(kind)
    browser = stack.browser()
    browser.get(stack.python, "/set", key="before", value="1")
    before = browser.sid
    assert browser.get(stack.python, "/login", user="bob") == {"user": "bob"}
    assert browser.sid != before
    assert stack.stored(before) is None
    seen = browser.get(stack.node, "/whoami")
    assert seen["user"] == "bob"
    assert seen["session"] == {"passport": {"user": "bob"}, "before": "1"}
    assert len(browser.sid) == 32


def test_python_and_node_write_the_same_cookie_object(stacks: Stacks, kind: str) -> None:
    """The cookie object Python stores has express-session's members, order and values for the same options."""
    stack = stacks.get(kind)
    from_python, from_node = stack.browser(), stack.browser()
    from_python.get(stack.python, "/login", user="carol")
    from_node.get(stack.node, "/login", user="carol")
    python_found, node_found = stack.stored(from_python.sid), stack.stored(from_node.sid)
    assert python_found is not None
    assert node_found is not None
    python_cookie, node_cookie = python_found[0]["cookie"], node_found[0]["cookie"]
    assert list(python_cookie) == list(node_cookie)
    assert {k: v for k, v in python_cookie.items() if k != "expires"} == {
        k: v for k, v in node_cookie.items() if k != "expires"
    }
    assert python_cookie["originalMaxAge"] == MAX_AGE * 1000
    assert list(python_found[0]) == ["cookie", "passport"]


def test_counter_alternating_between_the_sides_never_loses_an_increment(stacks: Stacks, kind: str) -> None:
    """A counter incremented in turn by Node and Python counts every request (merges keep the other side's data)."""
    stack = stacks.get(kind)
    browser = stack.browser()
    counts = [browser.get(server, "/counter")["counter"] for server in [stack.node, stack.python] * 3]
    assert counts == [1, 2, 3, 4, 5, 6]


def test_logout_on_node_ends_the_session_for_python(stacks: Stacks, kind: str) -> None:
    """After a logout on Node, Python sees no user and the record is gone."""
    stack = stacks.get(kind)
    browser = stack.browser()
    browser.get(stack.python, "/login", user="dave")
    sid = browser.sid
    assert browser.get(stack.node, "/whoami")["user"] == "dave"
    browser.get(stack.node, "/logout")
    assert stack.stored(sid) is None
    assert browser.get(stack.python, "/whoami")["user"] is None


def test_logout_on_python_ends_the_session_for_node(stacks: Stacks, kind: str) -> None:
    """After a logout on Python, the record is gone, the cookie expired, and the old cookie gets Node nothing."""
    stack = stacks.get(kind)
    browser = stack.browser()
    browser.get(stack.node, "/login", user="erin")
    sid, cookie = browser.sid, browser.value
    browser.get(stack.python, "/logout")
    assert browser.value is None
    assert stack.stored(sid) is None
    browser.value = cookie  # a client that kept the old cookie anyway
    assert browser.get(stack.node, "/whoami")["user"] is None
    assert browser.get(stack.python, "/whoami")["user"] is None


# -- secret rotation ---------------------------------------------------------------------------------


def test_python_accepts_an_old_secret_cookie_and_reissues_it_with_the_newest(stacks: Stacks, kind: str) -> None:
    """A cookie signed by the old secret logs in on Python, which re-issues it signed by the newest."""
    stack = stacks.get(kind)
    browser = stack.browser()
    browser.get(stack.node, "/login", user="frank")
    sid = browser.sid
    browser.value = ExpressSigner([OLD.encode()]).sign(sid)
    assert browser.get(stack.python, "/whoami")["user"] == "frank"
    assert len(browser.last_set) == 1
    assert ExpressSigner([NEW.encode()]).unsign(browser.last_set[0]) is not None
    assert ExpressSigner([OLD.encode()]).unsign(browser.last_set[0]) is None
    assert browser.get(stack.node, "/whoami")["user"] == "frank"


def test_node_accepts_an_old_secret_cookie_and_reissues_it_with_the_newest(stacks: Stacks, kind: str) -> None:
    """A cookie Python signed by the old secret logs in on Node, which re-issues it (on a write) with the newest."""
    stack = stacks.get(kind)
    browser = stack.browser()
    browser.get(stack.python, "/login", user="grace")
    sid = browser.sid
    browser.value = ExpressSigner([OLD.encode()]).sign(sid)
    assert browser.get(stack.node, "/whoami")["user"] == "grace"
    browser.get(stack.node, "/set", key="k", value="v")
    assert len(browser.last_set) == 1
    assert ExpressSigner([NEW.encode()]).unsign(browser.last_set[0]) is not None
    assert ExpressSigner([OLD.encode()]).unsign(browser.last_set[0]) is None
    assert browser.sid == sid


# -- rolling expiry ----------------------------------------------------------------------------------


def test_python_refreshing_a_node_session_moves_the_json_and_the_store_expiry_together(
    stacks: Stacks, kind: str
) -> None:
    """A Node session refreshed by a rolling Python request expires MAX_AGE from now, in the JSON and the store."""
    stack = stacks.get(kind, "rolling")
    browser = stack.browser()
    browser.get(stack.node, "/login", user="heidi")
    stack.age(browser.sid, 100)
    before = time.time()
    assert browser.get(stack.python, "/whoami")["user"] == "heidi"
    json_expiry, store_expiry = _agree(stack, browser.sid)
    assert abs(json_expiry - store_expiry) < 1
    assert before + MAX_AGE - 1 < store_expiry < time.time() + MAX_AGE + 1
    assert len(browser.last_set) == 1  # rolling: the cookie is re-sent


def test_node_refreshing_a_python_session_keeps_python_on_the_store_expiry(stacks: Stacks, kind: str) -> None:
    """Node's rolling touch moves the store's expiry; Python follows it, and its next write re-aligns the JSON."""
    stack = stacks.get(kind, "rolling")
    browser = stack.browser()
    browser.get(stack.python, "/login", user="ivan")
    stack.age(browser.sid, 100)
    before = time.time()
    assert browser.get(stack.node, "/whoami")["user"] == "ivan"
    # connect-redis' touch is an EXPIRE and connect-mongo's a $set of expires: only the store's expiry moves.
    _, store_expiry = _agree(stack, browser.sid)
    assert store_expiry > before + MAX_AGE - 2
    seen = browser.get(stack.python, "/whoami")
    assert seen["user"] == "ivan"
    assert abs(seen["expires"] - store_expiry) < 2
    json_expiry, store_expiry = _agree(stack, browser.sid)
    assert abs(json_expiry - store_expiry) < 1
    assert store_expiry > before + MAX_AGE - 2


# -- cookie names with ':' ---------------------------------------------------------------------------


def test_a_cookie_name_with_a_colon_is_shared(stacks: Stacks, kind: str) -> None:
    """connect's ``XXX:sess`` cookie name works both ways (express-session 1.18.0 accepts ':' in names)."""
    stack = stacks.get(kind, "colon")
    browser = stack.browser()
    assert browser.name == "XXX:sess"
    browser.get(stack.node, "/login", user="judy")
    assert browser.get(stack.python, "/whoami")["user"] == "judy"
    browser.get(stack.python, "/login", user="mallory")
    assert browser.get(stack.node, "/whoami")["user"] == "mallory"


# -- the signature, against Node's cookie-signature ----------------------------------------------------


def test_signatures_cross_check_with_node_cookie_signature() -> None:
    """Values Python signs verify with Node's cookie-signature and the reverse, for ids of both generators."""
    require_node()
    signer = ExpressSigner([NEW.encode(), OLD.encode()])
    ids = [signer.new_id() for _ in range(5)]
    python_signed = [signer.sign(sid) for sid in ids]
    script = f"""
const sig = require("cookie-signature");
const uid = require("uid-safe");
const ids = {json.dumps(ids)};
const fromPython = {json.dumps(python_signed)}.map((v) => decodeURIComponent(v).slice(2));
const nodeIds = [uid.sync(24), uid.sync(24), "0123456789abcdef-uuid-like_id"];
console.log(JSON.stringify({{
  verified: fromPython.map((v) => sig.unsign(v, {json.dumps(NEW)})),
  wrongSecret: fromPython.map((v) => sig.unsign(v, {json.dumps(OLD)})),
  nodeIds,
  fromNode: nodeIds.map((id) => encodeURIComponent("s:" + sig.sign(id, {json.dumps(OLD)}))),
}}));
"""
    result = json.loads(node_eval(script))
    assert result["verified"] == ids
    assert result["wrongSecret"] == [False] * len(ids)
    for sid, value in zip(result["nodeIds"], result["fromNode"], strict=True):
        unsigned = signer.unsign(value)
        assert unsigned is not None
        assert (unsigned.sid, unsigned.stale) == (sid, True)
