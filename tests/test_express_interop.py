"""One login shared by a Python service (persession, express mode) and a Node one (express-session).

Both sides are real processes on 127.0.0.1: ``tests/apps/express_compat_app.py``
under uvicorn, and ``tests/node/app.js`` under node, on one store: a Redis
server (connect-redis' JSON strings, key ``<prefix><id>``) or a MongoDB-wire
server (connect-mongo's documents). A ``Browser`` carries the cookie from one to
the other by hand, as a browser would behind one nginx (cookies ignore the port).

Every Node test runs against both installs of :data:`_node.INSTALLS`:
``connect-redis8-mongo5`` (express-session 1.18.0, connect-redis 8.1,
connect-mongo 5.1, pinned in ``tests/node/package-lock.json``) and
``connect-redis9-mongo6`` (express-session 1.19, connect-redis 9, connect-mongo
6, pinned in ``tests/node/connect-redis9-mongo6/package-lock.json``). One Python
service per store and variant serves the Node services of both installs.

Without node or the packages (``npm ci --prefix`` each install) these tests
skip, and fail under ``CI``.
"""

from __future__ import annotations

import contextlib
import json
import re
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from _mongo import mongo_server_fixture  # noqa: F401  (the fixture)
from _node import INSTALLS, NodeInstall, node_app, node_eval, require_node
from _redis import redis_server_fixture, redis_servers_fixture  # noqa: F401  (the fixtures)
from _servers import ROOT, ServerProcess, uvicorn_server
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
        #: ... and those headers whole.
        self.last_headers: list[str] = []

    def get(self, server: ServerProcess, path: str, **params: str) -> Any:
        """GET ``path`` with the cookie, keep what the response sets, and return its JSON."""
        headers = {"Cookie": f"{self.name}={self.value}"} if self.value is not None else {}
        response = httpx.get(f"{server.url}{path}", params=params, headers=headers, timeout=15)
        assert response.status_code == 200, response.text
        self.last_set = []
        self.last_headers = []
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            if name != self.name:
                continue
            value, _, attributes = rest.partition(";")
            self.last_set.append(value)
            self.last_headers.append(header)
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
class PythonSide:
    """The Python service of a store and variant, and what a Node service needs to share its store."""

    python: ServerProcess
    cookie_name: str
    rolling: bool
    raw: Any  # a redis.Redis, or a pymongo Collection
    prefix: str = ""
    node_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stack:
    """A Python and a Node service on one store, configured alike."""

    kind: str
    python: ServerProcess
    node: ServerProcess
    cookie_name: str
    raw: Any  # a redis.Redis, or a pymongo Collection
    prefix: str = ""

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
    """Stacks by (store kind, install, variant), started on first use and stopped at the end of the module.

    Variants: ``main``, ``rolling`` (both services rolling), ``colon`` (the
    cookie ``XXX:sess``), and ``nottl`` (Redis only: the main Python service
    beside a Node one whose connect-redis has ``disableTTL``). The Python
    service of a kind and variant is shared by the Node services of every
    install.
    """

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.exit = contextlib.ExitStack()
        self.sides: dict[tuple[str, str], PythonSide] = {}
        self.nodes: dict[tuple[str, str, str], ServerProcess] = {}

    def get(self, kind: str, install: NodeInstall, variant: str = "main") -> Stack:
        require_node(install)
        side_key = (kind, "main" if variant == "nottl" else variant)
        if side_key not in self.sides:
            self.sides[side_key] = self._python(*side_key)
        side = self.sides[side_key]
        node_key = (kind, variant, install.id)
        if node_key not in self.nodes:
            self.nodes[node_key] = self.exit.enter_context(
                node_app(
                    kind,
                    secrets=[NEW, OLD],
                    install=install,
                    cookie_name=side.cookie_name,
                    rolling=side.rolling,
                    max_age_ms=MAX_AGE * 1000,
                    disable_ttl=variant == "nottl",
                    **side.node_options,
                )
            )
        return Stack(kind, side.python, self.nodes[node_key], side.cookie_name, side.raw, side.prefix)

    def _python(self, kind: str, variant: str) -> PythonSide:
        cookie_name = "XXX:sess" if variant == "colon" else "connect.sid"
        rolling = variant == "rolling"
        options = {"cookie_name": cookie_name, "max_age": MAX_AGE, "rolling": rolling}
        env = {"PERSESSION_TEST_SECRET": json.dumps([NEW, OLD]), "PERSESSION_TEST_OPTIONS": json.dumps(options)}
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
        return PythonSide(python, cookie_name, rolling, raw, prefix, node_options)


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


@pytest.fixture(params=INSTALLS, ids=[install.id for install in INSTALLS])
def install(request: pytest.FixtureRequest) -> NodeInstall:
    """The Node packages: connect-redis 8.1 + connect-mongo 5.1, or connect-redis 9 + connect-mongo 6."""
    found: NodeInstall = request.param
    return found


def _agree(stack: Stack, sid: str) -> tuple[float, float]:
    """The stored JSON's ``cookie.expires`` and the store's expiry for ``sid``."""
    found = stack.stored(sid)
    assert found is not None
    document, store_expiry = found
    json_expiry = parse_iso_date(document["cookie"]["expires"])
    assert json_expiry is not None
    return json_expiry, store_expiry


# -- login, data, logout -----------------------------------------------------------------------------


def test_node_login_is_seen_by_python_and_its_changes_by_node(stacks: Stacks, kind: str, install: NodeInstall) -> None:
    """A login on Node is a login on Python, with the data; what Python changes, Node then sees."""
    stack = stacks.get(kind, install)
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


def test_python_login_is_seen_by_node(stacks: Stacks, kind: str, install: NodeInstall) -> None:
    """A login on Python (guard.login: passport's shape, a new id) is a login on Node."""
    stack = stacks.get(kind, install)
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


def test_python_and_node_write_the_same_cookie_object(stacks: Stacks, kind: str, install: NodeInstall) -> None:
    """The cookie object Python stores has express-session's members, order and values for the same options."""
    stack = stacks.get(kind, install)
    from_python, from_node = stack.browser(), stack.browser()
    from_python.get(stack.python, "/login", user="carol")
    from_node.get(stack.node, "/login", user="carol")
    python_found, node_found = stack.stored(from_python.sid), stack.stored(from_node.sid)
    assert python_found is not None
    assert node_found is not None
    python_cookie, node_cookie = python_found[0]["cookie"], node_found[0]["cookie"]
    assert list(python_cookie) == list(node_cookie)
    times = {"expires", "originalMaxAge"}
    assert {k: v for k, v in python_cookie.items() if k not in times} == {
        k: v for k, v in node_cookie.items() if k not in times
    }
    assert python_cookie["originalMaxAge"] == MAX_AGE * 1000
    # express-session computes originalMaxAge as expires - Date.now() right after setting expires:
    # a millisecond that ticks in between makes it 3599999.
    assert 0 <= MAX_AGE * 1000 - node_cookie["originalMaxAge"] <= 2
    assert list(python_found[0]) == ["cookie", "passport"]


def test_counter_alternating_between_the_sides_never_loses_an_increment(
    stacks: Stacks, kind: str, install: NodeInstall
) -> None:
    """A counter incremented in turn by Node and Python counts every request (merges keep the other side's data)."""
    stack = stacks.get(kind, install)
    browser = stack.browser()
    counts = [browser.get(server, "/counter")["counter"] for server in [stack.node, stack.python] * 3]
    assert counts == [1, 2, 3, 4, 5, 6]


def test_logout_on_node_ends_the_session_for_python(stacks: Stacks, kind: str, install: NodeInstall) -> None:
    """After a logout on Node, Python sees no user and the record is gone."""
    stack = stacks.get(kind, install)
    browser = stack.browser()
    browser.get(stack.python, "/login", user="dave")
    sid = browser.sid
    assert browser.get(stack.node, "/whoami")["user"] == "dave"
    browser.get(stack.node, "/logout")
    assert stack.stored(sid) is None
    assert browser.get(stack.python, "/whoami")["user"] is None


def test_logout_on_python_ends_the_session_for_node(stacks: Stacks, kind: str, install: NodeInstall) -> None:
    """After a logout on Python, the record is gone, the cookie expired, and the old cookie gets Node nothing."""
    stack = stacks.get(kind, install)
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


def test_python_accepts_an_old_secret_cookie_and_reissues_it_with_the_newest(
    stacks: Stacks, kind: str, install: NodeInstall
) -> None:
    """A cookie signed by the old secret logs in on Python, which re-issues it signed by the newest."""
    stack = stacks.get(kind, install)
    browser = stack.browser()
    browser.get(stack.node, "/login", user="frank")
    sid = browser.sid
    browser.value = ExpressSigner([OLD.encode()]).sign(sid)
    assert browser.get(stack.python, "/whoami")["user"] == "frank"
    assert len(browser.last_set) == 1
    assert ExpressSigner([NEW.encode()]).unsign(browser.last_set[0]) is not None
    assert ExpressSigner([OLD.encode()]).unsign(browser.last_set[0]) is None
    assert browser.get(stack.node, "/whoami")["user"] == "frank"


def test_node_accepts_an_old_secret_cookie_and_reissues_it_with_the_newest(
    stacks: Stacks, kind: str, install: NodeInstall
) -> None:
    """A cookie Python signed by the old secret logs in on Node, which re-issues it (on a write) with the newest."""
    stack = stacks.get(kind, install)
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
    stacks: Stacks, kind: str, install: NodeInstall
) -> None:
    """A Node session refreshed by a rolling Python request expires MAX_AGE from now, in the JSON and the store."""
    stack = stacks.get(kind, install, "rolling")
    browser = stack.browser()
    browser.get(stack.node, "/login", user="heidi")
    stack.age(browser.sid, 100)
    before = time.time()
    assert browser.get(stack.python, "/whoami")["user"] == "heidi"
    json_expiry, store_expiry = _agree(stack, browser.sid)
    assert abs(json_expiry - store_expiry) < 1
    assert before + MAX_AGE - 1 < store_expiry < time.time() + MAX_AGE + 1
    assert len(browser.last_set) == 1  # rolling: the cookie is re-sent


def test_node_refreshing_a_python_session_keeps_python_on_the_store_expiry(
    stacks: Stacks, kind: str, install: NodeInstall
) -> None:
    """Node's rolling touch moves the store's expiry; Python follows it, and its next write re-aligns the JSON."""
    stack = stacks.get(kind, install, "rolling")
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


def _sets_colon_names(install: NodeInstall) -> bool:
    """express-session up to 1.18.0 sets a cookie named ``XXX:sess``; 1.18.1 and later throw instead."""
    return tuple(int(part) for part in install.pins["express-session"].split(".")) <= (1, 18, 0)


def test_a_cookie_name_with_a_colon_is_shared(stacks: Stacks, kind: str, install: NodeInstall) -> None:
    """connect's ``XXX:sess``: Node reads Python's; express-session 1.18.0 sets its own, 1.18.1 and later cannot."""
    stack = stacks.get(kind, install, "colon")
    browser = stack.browser()
    assert browser.name == "XXX:sess"
    browser.get(stack.python, "/login", user="mallory")
    assert browser.get(stack.node, "/whoami")["user"] == "mallory"
    if _sets_colon_names(install):
        from_node = stack.browser()
        from_node.get(stack.node, "/login", user="judy")
        assert from_node.get(stack.python, "/whoami")["user"] == "judy"
        return
    # The cookie package refuses the name ("argument name is invalid") while the headers go out, and
    # Express' error handler then finds them sent: the body may be cut short. Only the headers count.
    with httpx.stream("GET", f"{stack.node.url}/login", params={"user": "judy"}, timeout=15) as response:
        assert response.status_code == 200
        set_cookies = response.headers.get_list("set-cookie")
    assert not [header for header in set_cookies if header.startswith("XXX:sess=")]


# -- the signature, against Node's cookie-signature ----------------------------------------------------


@pytest.mark.parametrize("install", INSTALLS, ids=[install.id for install in INSTALLS])
def test_signatures_cross_check_with_node_cookie_signature(install: NodeInstall) -> None:
    """Values Python signs verify with Node's cookie-signature and the reverse, for ids of both generators."""
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
    result = json.loads(node_eval(script, install))
    assert result["verified"] == ids
    assert result["wrongSecret"] == [False] * len(ids)
    for sid, value in zip(result["nodeIds"], result["fromNode"], strict=True):
        unsigned = signer.unsign(value)
        assert unsigned is not None
        assert (unsigned.sid, unsigned.stale) == (sid, True)


# -- the installs ------------------------------------------------------------------------------------


def test_each_install_runs_the_versions_it_pins(stacks: Stacks, install: NodeInstall) -> None:
    """The Node app loads exactly the packages its install pins (not a copy found in a parent directory)."""
    stack = stacks.get("redis", install)
    assert httpx.get(f"{stack.node.url}/versions", timeout=15).json() == install.pins


# -- the Set-Cookie header ---------------------------------------------------------------------------

# s: + a 32-character id + . + the base64 HMAC, URL-encoded as express-session (encodeURIComponent) does.
_SIGNED_VALUE = re.compile(r"s%3A[A-Za-z0-9_-]{32}\.(?:[A-Za-z0-9]|%2B|%2F){43}")


def _attributes(header: str) -> tuple[str, list[str], datetime | None]:
    """A Set-Cookie header's value, its attributes in order (Expires' date replaced by ``<date>``), and that date."""
    first, *rest = header.split("; ")
    attributes, when = [], None
    for part in rest:
        name, _, value = part.partition("=")
        if name == "Expires":
            when = parsedate_to_datetime(value)
            part = "Expires=<date>"
        attributes.append(part)
    return first.partition("=")[2], attributes, when


def _same_cookie(python_header: str, node_header: str) -> list[str]:
    """Assert both headers set the same cookie the same way, the value and date aside; return the attributes."""
    python_value, python_attributes, python_when = _attributes(python_header)
    node_value, node_attributes, node_when = _attributes(node_header)
    assert python_attributes == node_attributes, (python_header, node_header)
    assert _SIGNED_VALUE.fullmatch(python_value)
    assert _SIGNED_VALUE.fullmatch(node_value)
    assert python_when is not None
    assert node_when is not None
    assert abs((python_when - node_when).total_seconds()) <= 3
    return python_attributes


def test_the_cookie_is_set_as_express_session_sets_it(stacks: Stacks, kind: str, install: NodeInstall) -> None:
    """A login's Set-Cookie and a rolling re-send have express-session's attributes and order: Expires, no Max-Age."""
    stack = stacks.get(kind, install)
    from_python, from_node = stack.browser(), stack.browser()
    from_python.get(stack.python, "/login", user="olivia")
    from_node.get(stack.node, "/login", user="olivia")
    assert len(from_python.last_headers) == len(from_node.last_headers) == 1
    attributes = _same_cookie(from_python.last_headers[0], from_node.last_headers[0])
    assert attributes == ["Path=/", "Expires=<date>", "HttpOnly", "SameSite=Lax"]

    rolling = stacks.get(kind, install, "rolling")
    browser = rolling.browser()
    browser.get(rolling.node, "/login", user="olivia")
    browser.get(rolling.node, "/whoami")
    (node_header,) = browser.last_headers
    browser.get(rolling.python, "/whoami")
    (python_header,) = browser.last_headers
    assert _same_cookie(python_header, node_header) == attributes


# -- records with no store expiry --------------------------------------------------------------------


def _no_store_expiry(stack: Stack, sid: str, *, cookie_expires: float | None = None) -> str:
    """Make ``sid``'s record one the store keeps no expiry for; the stored JSON text.

    Redis: the Node service of the ``nottl`` variant wrote it without a TTL
    (connect-redis' disableTTL); this only checks so. MongoDB: connect-mongo
    always writes ``expires``, so it is removed here (a document from another
    writer, or from before a migration), and ``cookie_expires`` moves the
    cookie's expiry in the JSON.
    """
    if stack.kind == "redis":
        assert stack.raw.pttl(stack.prefix + sid) == -1
        return str(stack.raw.get(stack.prefix + sid).decode())
    document = stack.raw.find_one({"_id": sid})
    assert document is not None
    text = str(document["session"])
    if cookie_expires is not None:
        record = json.loads(text)
        record["cookie"]["expires"] = iso_date(cookie_expires)
        text = json.dumps(record, separators=(",", ":"))
    stack.raw.update_one({"_id": sid}, {"$set": {"session": text}, "$unset": {"expires": ""}})
    return text


def _stored_text(stack: Stack, sid: str) -> tuple[str | None, bool]:
    """The stored JSON text of ``sid`` and whether the store keeps an expiry for it."""
    if stack.kind == "redis":
        raw = stack.raw.get(stack.prefix + sid)
        return (None if raw is None else raw.decode()), stack.raw.pttl(stack.prefix + sid) != -1
    document = stack.raw.find_one({"_id": sid})
    return (None if document is None else document["session"]), document is not None and "expires" in document


def test_a_record_with_no_store_expiry_lives_until_its_cookie_expires(
    stacks: Stacks, kind: str, install: NodeInstall
) -> None:
    """No TTL (disableTTL) or no expires field: Python follows the cookie's expires, Node serves the record for ever.

    With a cookie ahead or a browser-session cookie (null), both sides are
    logged in. Past the cookie's expires, persession is stricter than Node
    (docs/express.md): anonymous, the cookie expired, the record left as it
    is; Node still serves it.
    """
    stack = stacks.get(kind, install, "nottl" if kind == "redis" else "main")
    ahead, browser_session, past = stack.browser(), stack.browser(), stack.browser()
    ahead.get(stack.node, "/login", user="peggy")
    browser_session.get(stack.node, "/login", user="quentin", maxAgeMs="null")
    # Redis: Node writes the soon-expired record itself; MongoDB: its cookie is moved into the past.
    past.get(stack.node, "/login", user="rupert", maxAgeMs="300" if kind == "redis" else str(MAX_AGE * 1000))
    _no_store_expiry(stack, ahead.sid)
    _no_store_expiry(stack, browser_session.sid)
    text = _no_store_expiry(stack, past.sid, cookie_expires=time.time() - 1)
    cookie_expires = parse_iso_date(json.loads(text)["cookie"]["expires"])
    assert cookie_expires is not None
    time.sleep(max(0.0, cookie_expires - time.time() + 0.05))

    # /counter, not /whoami: the Python app's whoami cannot put a never-ending expiry (inf) in JSON.
    assert browser_session.get(stack.python, "/counter") == {"counter": 1}
    assert ahead.get(stack.python, "/whoami")["user"] == "peggy"
    cookie, sid = past.value, past.sid
    assert past.get(stack.python, "/whoami")["user"] is None
    assert past.value is None  # persession expired the cookie
    assert _stored_text(stack, sid) == (text, False)
    past.value = cookie  # a client that kept it anyway
    assert past.get(stack.node, "/whoami")["user"] == "rupert"
    assert browser_session.get(stack.node, "/whoami") == {
        "user": "quentin",
        "session": {"passport": {"user": "quentin"}, "counter": 1},
        "id": browser_session.sid,
    }


# -- connect-mongo's TTL index -----------------------------------------------------------------------

_NODE_CREATE_INDEX = """
const mod = require("connect-mongo");
const { MongoClient } = require("mongodb");
const MongoStore = typeof mod.create === "function" ? mod : mod.MongoStore;
(async () => {
  const client = new MongoClient(%(url)s, { monitorCommands: true });
  const sent = [];
  client.on("commandStarted", (event) => {
    if (event.commandName !== "createIndexes") return;
    for (const index of event.command.indexes) {
      sent.push(Object.entries(index).map(([k, v]) => [k, v instanceof Map ? Object.fromEntries(v) : v]));
    }
  });
  await client.connect();
  const store = MongoStore.create({ client, dbName: %(db)s, collectionName: "sessions" });
  await new Promise((resolve, reject) => store.get("probe", (error) => (error ? reject(error) : resolve())));
  console.log(JSON.stringify({ sent }));
  await client.close();
})().catch((error) => { console.error(error); process.exit(1); });
"""


def test_connect_mongo_starts_on_the_ttl_index_persession_created(mongo_server: Any, install: NodeInstall) -> None:
    """persession creates connect-mongo's TTL index as connect-mongo does: Node then starts on that database and serves.

    Both drivers send the same index document (keys, options and their order),
    and listIndexes reports the same spec for the index either one created.
    """
    from pymongo import MongoClient, monitoring

    from persession.stores.mongo import MongoStore

    class CreateIndexes(monitoring.CommandListener):
        def __init__(self) -> None:
            self.sent: list[list[list[Any]]] = []

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name == "createIndexes":
                for index in event.command["indexes"]:
                    self.sent.append([[k, dict(v) if k == "key" else v] for k, v in index.items()])

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    require_node(install)
    listener = CreateIndexes()
    by_python, by_node = (f"index_{uuid.uuid4().hex[:12]}" for _ in range(2))
    url = mongo_server.url.rstrip("/")
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.url, tz_aware=True)
    try:
        store = MongoStore.from_url(f"{url}/{by_python}?layout=connect-mongo", event_listeners=[listener])
        with contextlib.closing(store):
            assert store.load("0" * 32) is None  # the first use creates the index
        with node_app(
            "mongo", secrets=[NEW, OLD], install=install, mongo_url=mongo_server.url, mongo_db=by_python
        ) as node:
            browser = Browser("connect.sid")
            browser.get(node, "/login", user="sybil")
            assert browser.get(node, "/whoami")["user"] == "sybil"
        script = _NODE_CREATE_INDEX % {"url": json.dumps(mongo_server.url), "db": json.dumps(by_node)}
        from_node = json.loads(node_eval(script, install))["sent"]
        assert listener.sent == from_node
        assert from_node == [
            [["background", True], ["expireAfterSeconds", 0], ["name", "expires_1"], ["key", {"expires": 1}]]
        ]

        def spec(database: str) -> list[list[tuple[str, Any]]]:
            return [
                [(k, list(v.items()) if k == "key" else v) for k, v in index.items()]
                for index in client[database]["sessions"].list_indexes()
            ]

        assert spec(by_python) == spec(by_node)
        assert [name for name, _ in spec(by_python)[1]][:3] == ["v", "key", "name"]
    finally:
        client.drop_database(by_python)
        client.drop_database(by_node)
        client.close()


# -- the Node snippets of docs/express.md --------------------------------------------------------------

EXPRESS_DOC = ROOT / "docs" / "express.md"
# A ```js fence, at the top level or in a list-table cell ("* - ```js", then the code indented).
_FENCE = re.compile(r"^(?:[*-] )*```js\n(?P<body>.*?)^ *```$", re.MULTILINE | re.DOTALL)
_NAMES = re.compile(r"connect-(redis|mongo) (\d+)(?:\.\d+)?(?: or (\d+)(?:\.\d+)?)?")
_CONNECT_MONGO_6 = 'const { MongoStore } = require("connect-mongo");'

_HARNESS = """
const express = require("express");
const http = require("node:http");
const app = express();
(async () => {
%(snippet)s
  app.get("/", (req, res) => { req.session.probe = 1; res.send("ok"); });
  const server = app.listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const answer = await new Promise((resolve, reject) => {
    http.get({ host: "127.0.0.1", port: server.address().port, path: "/" }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode, cookies: res.headers["set-cookie"] || [] }));
    }).on("error", reject);
  });
  console.log(JSON.stringify(answer));
  process.exit(0);
})().catch((error) => { console.error(error); process.exit(1); });
"""


def _doc_snippets() -> dict[str, str]:
    """The Node blocks of docs/express.md: ``{"redis 8": code, "redis 9": ..., "mongo 6": ..., "mongo 5": ...}``.

    Each complete example names the releases it is for on its first line; the
    connect-mongo 5.1 form is the 6.0 example with its one-line require.
    """
    blocks = [textwrap.dedent(found["body"]) for found in _FENCE.finditer(EXPRESS_DOC.read_text(encoding="utf-8"))]
    snippets: dict[str, str] = {}
    for block in blocks:
        named = _NAMES.search(block.splitlines()[0])
        assert named is not None, f"a Node block of docs/express.md names no release:\n{block}"
        store, *majors = named.groups()
        for major in filter(None, majors):
            snippets[f"{store} {major}"] = block
    older = snippets.pop("mongo 5")
    assert _CONNECT_MONGO_6 in snippets["mongo 6"]
    snippets["mongo 5"] = snippets["mongo 6"].replace(_CONNECT_MONGO_6, older.strip().splitlines()[-1])
    return snippets


@pytest.mark.parametrize("store", KINDS)
def test_the_node_snippets_of_the_docs_run(store: str, install: NodeInstall, request: pytest.FixtureRequest) -> None:
    """Each Node example of docs/express.md, as written, serves a session and stores it, on the releases it names."""
    major = install.pins[f"connect-{store}"].split(".")[0]
    snippets = _doc_snippets()
    assert set(snippets) == {"redis 8", "redis 9", "mongo 5", "mongo 6"}
    snippet = snippets[f"{store} {major}"]
    if store == "redis":
        server = request.getfixturevalue("redis_server")
        prefix = f"docs-{uuid.uuid4().hex[:10]}:"
        snippet = snippet.replace("redis://cache:6379/0", server.url).replace('prefix: "sess:"', f"prefix: {prefix!r}")
    else:
        server = request.getfixturevalue("mongo_server")
        database = f"docs_{uuid.uuid4().hex[:12]}"
        snippet = snippet.replace("mongodb://db:27017", server.url.rstrip("/")).replace('"app"', json.dumps(database))
    answer = json.loads(node_eval(_HARNESS % {"snippet": textwrap.indent(snippet, "  ")}, install))
    assert answer["status"] == 200
    (cookie,) = answer["cookies"]
    assert cookie.startswith("connect.sid=s%3A")
    unsigned = ExpressSigner([NEW.encode()]).unsign(cookie.split(";", 1)[0].split("=", 1)[1])
    assert unsigned is not None
    if store == "redis":
        with contextlib.closing(server.client()) as raw:
            stored = raw.get(prefix + unsigned.sid)
            raw.delete(prefix + unsigned.sid)
        assert stored is not None
        assert json.loads(stored)["probe"] == 1
    else:
        from pymongo import MongoClient

        client: MongoClient[dict[str, Any]] = MongoClient(server.url)
        try:
            document = client[database]["sessions"].find_one({"_id": unsigned.sid})
        finally:
            client.drop_database(database)
            client.close()
        assert document is not None
        assert json.loads(document["session"])["probe"] == 1
