"""One express merge engine: connect-mongo's Python splicer is connect-redis' Lua ``_CONNECT_WRITE``, byte for byte.

Every test runs both on the same stored text and change: the Lua on the
session's real redis-server (with the arguments ``_connect_write_step``
gives it), ``persession.stores._splice.splice`` in process. A property test
generates express-session texts (duplicate members, odd number spellings,
escapes, unicode, nested values, odd or missing cookies, broken JSON) and
changes; the example tests pin each rule; the last test runs the two stores
themselves (connect-redis on Redis, connect-mongo on MongoDB).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _mongo import make_mongo_store, mongo_server_fixture  # noqa: F401  (the fixture)
from _redis import (  # noqa: F401  (the *_fixture names are fixtures)
    RedisServer,
    key_prefix_fixture,
    raw_client_fixture,
    redis_server_fixture,
    redis_servers_fixture,
)
from _stores import MongoExpress
from persession import Change, NotSerializable
from persession.codecs import iso_date
from persession.stores._splice import Edit, Malformed, splice
from persession.stores.redis import RedisStore
from persession.stores.redis._connect_redis import _connect_write_step

pytestmark = [pytest.mark.server]

SID = "abcdefghijklmnopqrstuvwxyz012345"
NOW = time.time()
EXPIRES = NOW + 600
#: What both engines answer, in one spelling: the new text, "gone" or "malformed".
Answer = str


def lua(raw: redis.Redis, prefix: str, text: str, change: Change, *, keeps_expiry: bool) -> Answer:
    """The Lua's answer, and the text it left in Redis checked against it."""
    key = prefix + SID
    raw.set(key, text.encode("utf-8"), px=600_000 if keeps_expiry else None)
    call = _connect_write_step(prefix, SID, change, EXPIRES, NOW)
    reply = raw.eval(call.script.text, len(call.keys), *call.keys, *call.args)
    stored = raw.get(key)
    if isinstance(reply, bytes):
        assert stored == reply
        return reply.decode("utf-8")
    assert stored == text.encode("utf-8")  # gone or malformed: left as it was
    return {0: "gone", -1: "malformed"}[reply]


def python(text: str, change: Change, *, keeps_expiry: bool) -> Answer:
    result = splice(text, Edit(change, EXPIRES, NOW), keeps_expiry=keeps_expiry)
    if isinstance(result, Malformed):
        return "malformed"
    return "gone" if result is None else result


def both(raw: redis.Redis, prefix: str, text: str, change: Change, *, keeps_expiry: bool = True) -> Answer:
    """The answer both engines give (asserted equal, byte for byte)."""
    answer = python(text, change, keeps_expiry=keeps_expiry)
    assert lua(raw, prefix, text, change, keeps_expiry=keeps_expiry) == answer
    return answer


# -- generated texts ------------------------------------------------------------------------------------------------

WS = st.sampled_from(["", "", "", " ", "\n", "\t ", "\r\n"])
#: Number spellings: JSON's odd ones, and cjson's (C strtod's) that JSON forbids.
JSON_NUMBERS = ["0", "-0", "1", "1.0", "1.50", "1E5", "1e-07", "-0.0", "1e400", "12345678901234567890", "1.0e+2"]
NUMBERS = st.sampled_from(
    [*JSON_NUMBERS, "01", "+1", "1.", "0x1F", "NaN", "-Infinity", "inf", "nan(1)", "+.5", "0x1.8p1"]
)
STRINGS = st.sampled_from(
    ['""', '"x"', '"\\u00e9"', '"é"', '"\\"\\\\\\/"', '"a\\nb"', '"\\ud83d\\ude00"', '"😀"', '"tab\there"', '"\\u0000"']
) | st.text(max_size=6).map(lambda s: json.dumps(s, ensure_ascii=False))
SCALARS = NUMBERS | STRINGS | st.sampled_from(["true", "false", "null"])
NAMES = st.sampled_from(['"a"', '"b"', '"\\u0061"', '"é"', '"cookie"', '"c\\u006fokie"', '"n"', '"x y"'])
#: Tokens cjson refuses (each text has one now and then).
BAD = st.sampled_from(
    [".5", "1e", "0x", "-", "tru", "None", '"\\ud800"', '"\\uDC00"', '"\\x"', '"nul\x00"', '"open', "a", "[1,]", "{,}"]
)


def _join(pieces: list[str], ws: str, opening: str, closing: str) -> str:
    return opening + ws + ("," + ws).join(pieces) + ws + closing


VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.builds(_join, st.lists(inner, max_size=3), WS, st.just("["), st.just("]"))
        | st.builds(
            _join,
            st.lists(st.builds(lambda n, w, v: n + w + ":" + w + v, NAMES, WS, inner), max_size=3),
            WS,
            st.just("{"),
            st.just("}"),
        )
    ),
    max_leaves=6,
)
DATES = st.sampled_from(
    [iso_date(NOW + 3600), iso_date(NOW - 3600), iso_date(NOW), "2999-13-01T00:00:00.000Z", "2999-01-01T00:00:00Z"]
).map(json.dumps) | st.sampled_from(["null", "5", "true", '"tomorrow"', "{}"])
COOKIE_MEMBERS = st.sampled_from(['"originalMaxAge"', '"expires"', '"httpOnly"', '"path"', '"expir\\u0065s"'])
COOKIE_VALUES = DATES | st.sampled_from(["3600000", "null", "true", '"/"'])


@st.composite
def cookies(draw: st.DrawFn) -> str:
    """A cookie object (members duplicated, missing or odd), or now and then no object at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(["[]", "null", "5", '"x"', "[1]"]))
    members = draw(st.lists(st.tuples(COOKIE_MEMBERS, COOKIE_VALUES), max_size=5))
    ws = draw(WS)
    return _join([f"{name}{ws}:{ws}{value}" for name, value in members], ws, "{", "}")


@st.composite
def texts(draw: st.DrawFn) -> str:
    """An express-session text: a cookie somewhere (or none, or two), members that may repeat, whitespace."""
    members = draw(st.lists(st.tuples(NAMES, VALUES), max_size=6))
    if members and draw(st.integers(0, 9)) == 0:
        where = draw(st.integers(0, len(members) - 1))
        members[where] = (members[where][0], draw(BAD))
    for _ in range(draw(st.sampled_from([1, 1, 1, 1, 0, 2]))):
        members.insert(draw(st.integers(0, len(members))), ('"cookie"', draw(cookies())))
    ws = draw(WS)
    text = draw(WS) + _join([f"{n}{ws}:{ws}{v}" for n, v in members], ws, "{", "}") + draw(WS)
    damage = draw(st.integers(0, 19))
    if damage == 0:
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == 1:
        text += draw(st.sampled_from(["x", ",", "}", "\x00junk", "[]"]))
    return text


KEYS = st.sampled_from(["a", "b", "é", "cookie", "n", "new", "x y"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=5,
)
CHANGES = st.builds(
    Change,
    set=st.dictionaries(KEYS, JSON, max_size=3),
    deleted=st.frozensets(KEYS, max_size=3),
    cleared=st.booleans(),
)
PROPERTY = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


@PROPERTY
@given(text=texts(), change=CHANGES, keeps_expiry=st.booleans())
def test_the_python_splicer_is_the_lua_byte_for_byte(
    raw: redis.Redis, prefix: str, text: str, change: Change, keeps_expiry: bool
) -> None:
    """On any stored text and change, the Python splicer answers what the Lua answers: text, gone or malformed."""
    both(raw, prefix, text, change, keeps_expiry=keeps_expiry)


# -- one rule each ------------------------------------------------------------------------------------------------

FUTURE = iso_date(NOW + 3600)
PAST = iso_date(NOW - 3600)
MOVED = iso_date(EXPIRES)


@pytest.mark.parametrize(
    ("text", "change", "expected"),
    [
        pytest.param(
            '{"cookie":{"originalMaxAge":1,"expires":null},"f":1.50,"e":"\\u00e9" ,"d":[1, 2]}',
            Change(set={}),
            f'{{"cookie":{{"originalMaxAge":1,"expires":"{MOVED}"}},"f":1.50,"e":"\\u00e9","d":[1, 2]}}',
            id="untouched members byte for byte",
        ),
        pytest.param(
            '{"a":1,"cookie":{"path":"/","expires":"x"},"a":2,"b":3}',
            Change(set={"b": [4]}),
            f'{{"cookie":{{"path":"/","expires":"{MOVED}"}},"a":1,"b":[4]}}',
            id="the first of duplicates wins, cookie first",
        ),
        pytest.param(
            '{"cookie":{"originalMaxAge":null,"expires":null},"a":1}',
            Change(set={"cookie": 5, "new": "ü"}, deleted=frozenset({"a", "cookie"})),
            '{"cookie":{"originalMaxAge":null,"expires":null},"new":"ü"}',
            id="a browser-session cookie stays null; the cookie is never set or deleted",
        ),
        pytest.param(
            '{"cookie":{"httpOnly":true},"a":1,"b":2}',
            Change(set={"b": 0}, cleared=True),
            '{"cookie":{"httpOnly":true,"expires":null},"b":0}',
            id="cleared, and an expires appended",
        ),
        pytest.param(
            '{"cookie":{},"a":01,"b":0x1F}',
            Change(set={}),
            '{"cookie":{"expires":null},"a":01,"b":0x1F}',
            id="cjson's numbers",
        ),
        pytest.param('{"a":1}', Change(set={}), "malformed", id="no cookie"),
        pytest.param('{"cookie":[]}', Change(set={}), "malformed", id="a cookie array"),
        pytest.param('{"cookie":{},"a":"\\ud800"}', Change(set={}), "malformed", id="a lone surrogate"),
        pytest.param('{"cookie":{}}x', Change(set={}), "malformed", id="trailing text"),
        pytest.param("[1]", Change(set={}), "malformed", id="not an object"),
    ],
)
def test_each_rule(raw: redis.Redis, prefix: str, text: str, change: Change, expected: str) -> None:
    assert both(raw, prefix, text, change) == expected


@pytest.mark.parametrize(
    ("expires", "gone"),
    [(f'"{FUTURE}"', False), ("null", False), (f'"{PAST}"', True), ('"2999-01-01T00:00:00Z"', True), ("5", True)],
)
def test_no_store_expiry_and_a_past_cookie_is_never_written_again(
    raw: redis.Redis, prefix: str, expires: str, gone: bool
) -> None:
    text = f'{{"cookie":{{"originalMaxAge":1,"expires":{expires}}},"a":1}}'
    answer = both(raw, prefix, text, Change(set={"a": 2}), keeps_expiry=False)
    assert (answer == "gone") is gone
    assert both(raw, prefix, text, Change(set={"a": 2}), keeps_expiry=True) != "gone"


def test_values_that_are_not_json_are_refused_before_any_write() -> None:
    with pytest.raises(NotSerializable, match="'a'"):
        Edit(Change(set={"a": float("nan")}), EXPIRES, NOW)
    with pytest.raises(NotSerializable):
        Edit(Change(set={"a": "\ud800"}), EXPIRES, NOW)
    with pytest.raises(NotSerializable):
        Edit(Change(set={}, deleted=frozenset({1})), EXPIRES, NOW)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_both_stores_leave_the_same_text(redis_server: RedisServer, prefix: str, mongo_server: Any) -> None:
    """connect-redis on Redis and connect-mongo on MongoDB, given one text and one change, store one text."""
    text = '{"a" : 1.50,"cookie":{"expires":null,"originalMaxAge":5},"a":2,"é":"\\u00e9","n":{"x" : [1, 2.0]}}'
    change = Change(set={"b": {"y": 1}}, deleted=frozenset({"n"}))
    store = RedisStore.from_url(redis_server.url, layout="connect-redis", prefix=prefix)
    async with make_mongo_store("sync", "engine", layout="connect-mongo") as mongo:
        with contextlib.closing(MongoExpress(mongo_server.url, mongo)) as planted, contextlib.closing(store):
            planted.plant(SID, text)
            client = redis_server.client()
            try:
                client.set(prefix + SID, text, px=60_000)
                assert store.merge(SID, change, EXPIRES)
                assert mongo.merge(SID, change, EXPIRES)
                stored = client.get(prefix + SID)
            finally:
                client.close()
            assert stored is not None
            assert planted.text(SID) == stored.decode("utf-8")
            assert stored.decode("utf-8").startswith('{"cookie":{"expires":"')
            assert '"a":1.50,"é":"\\u00e9","b":{"y":1}}' in stored.decode("utf-8")
