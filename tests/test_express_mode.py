"""Express mode without any server: the option, the engine's plans, login/logout, and the record codec."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from persession import Change, ConfigError, Record, Session, SessionConfig
from persession.codecs import (
    COOKIE,
    cookie_expiry,
    decode_express,
    encode_express,
    express_cookie,
    iso_date,
    merge_express,
    parse_iso_date,
    record_expiry,
)
from persession.core import Action, SessionEngine, _indexed_user
from persession.guard import GuardPolicy, is_logged_in, login
from persession.signing import ExpressSigner, ItsdangerousSigner

NOW = 1_800_000_000.0
SECRET = "express-secret"


def engine(**options: Any) -> SessionEngine:
    config = SessionConfig(secret=SECRET, cookie_name="connect.sid", compat="express", **options)
    return SessionEngine(config, clock=lambda: NOW)


def cookie_for(eng: SessionEngine, sid: str) -> str:
    return f"connect.sid={eng.signer.sign(sid)}"


# -- the option ------------------------------------------------------------------------------------


def test_express_mode_selects_the_express_signer_and_passport_path() -> None:
    """compat='express' gives an ExpressSigner and the passport user path; the default keeps itsdangerous."""
    assert isinstance(engine().signer, ExpressSigner)
    assert engine().config.user_path == ("passport", "user")
    plain = SessionEngine(SessionConfig(secret=SECRET))
    assert isinstance(plain.signer, ItsdangerousSigner)
    assert plain.config.user_path == ("user",)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        pytest.param({"compat": "django"}, "compat", id="unknown dialect"),
        pytest.param({"compat": "express", "absolute_timeout": 60}, "absolute_timeout", id="absolute timeout"),
        pytest.param({"compat": "express", "idle_timeout": 60}, "idle_timeout", id="idle timeout with max_age"),
    ],
)
def test_express_mode_refuses_what_express_session_records_cannot_carry(options: dict[str, Any], option: str) -> None:
    """An unknown dialect, an absolute timeout, or an idle timeout beside max_age raise ConfigError naming it."""
    with pytest.raises(ConfigError) as raised:
        SessionConfig(secret=SECRET, **options)
    assert raised.value.option == option


def test_express_mode_allows_an_idle_timeout_for_browser_session_cookies() -> None:
    """With max_age=None the idle timeout is the store's TTL (connect-redis' ttl), as express-session's."""
    config = SessionConfig(secret=SECRET, compat="express", max_age=None, idle_timeout=14 * 24 * 3600)
    assert config.idle_seconds == 14 * 24 * 3600


# -- the engine --------------------------------------------------------------------------------------


def test_a_new_express_session_is_saved_with_express_sessions_cookie_object_first() -> None:
    """The SAVE of a new session puts express-session's cookie object first, then the data."""
    eng = engine(max_age=3600, samesite="strict", domain="example.com")
    session = eng.build(eng.open(None), None)
    session["cart"] = [1]
    plan = eng.plan(session, eng.open(None), status=200, secure_request=True)
    assert plan.action is Action.SAVE
    assert plan.record is not None
    assert list(plan.record.data) == [COOKIE, "cart"]
    assert plan.record.data[COOKIE] == {
        "originalMaxAge": 3_600_000,
        "expires": iso_date(NOW + 3600),
        "secure": True,
        "httpOnly": True,
        "domain": "example.com",
        "path": "/",
        "sameSite": "strict",
    }
    assert plan.set_cookie is not None
    assert plan.set_cookie.startswith("connect.sid=s%3A")
    assert len(plan.sid or "") == 32


def test_the_application_never_sees_or_writes_the_cookie_object() -> None:
    """A loaded record's cookie object is hidden from the app, and a 'cookie' the app sets is not merged."""
    eng = engine()
    sid = eng.signer.new_id()
    opening = eng.open(cookie_for(eng, sid))
    stored = {COOKIE: {"originalMaxAge": None, "expires": None}, "n": 1}
    session = eng.build(opening, Record(stored, created=NOW, accessed=NOW, expires=NOW + 60))
    assert dict(session) == {"n": 1}
    session["cookie"] = "mine"
    session["n"] = 2
    plan = eng.plan(session, opening, status=200, secure_request=False)
    assert plan.action is Action.MERGE
    assert plan.change == Change(set={"n": 2})


def test_login_stores_the_user_where_passport_does_and_indexes_it() -> None:
    """guard.login in express mode sets session['passport'] = {'user': ...}, regenerates and indexes the user."""
    eng = engine()
    sid = eng.signer.new_id()
    opening = eng.open(cookie_for(eng, sid))
    stored = {COOKIE: {}, "passport": {"other": True}, "n": 1}
    session = eng.build(opening, Record(stored, created=NOW, accessed=NOW, expires=NOW + 60))
    login(session, 42)
    assert dict.get(session, "passport") == {"other": True, "user": 42}
    plan = eng.plan(session, opening, status=200, secure_request=False)
    assert plan.action is Action.SAVE
    assert plan.replaces == sid
    assert plan.user == "42"
    assert plan.record is not None
    assert plan.record.data["passport"] == {"other": True, "user": 42}


def test_the_default_predicate_and_the_index_follow_the_passport_path() -> None:
    """is_logged_in and the user index read passport.user in express mode, and 'user' otherwise."""
    express = Session({"passport": {"user": "alice"}}, user_path=("passport", "user"))
    assert is_logged_in(express)
    assert GuardPolicy().check(express, None, "h", None) is None
    assert _indexed_user(express, express.user_path) == "alice"
    assert not is_logged_in(Session({"user": "alice"}, user_path=("passport", "user")))
    assert not is_logged_in(Session({"passport": "alice"}, user_path=("passport", "user")))
    assert is_logged_in(Session({"user": "alice"}))
    assert _indexed_user(Session({"user": 7})) == "7"


def test_a_regenerated_passport_session_stays_indexed_under_its_user() -> None:
    """A bare regenerate() of a session holding passport.user plans a SAVE indexed under that user."""
    eng = engine()
    sid = eng.signer.new_id()
    opening = eng.open(cookie_for(eng, sid))
    stored = {COOKIE: {}, "passport": {"user": "bob"}}
    session = eng.build(opening, Record(stored, created=NOW, accessed=NOW, expires=NOW + 60))
    session.regenerate()
    plan = eng.plan(session, opening, status=200, secure_request=False)
    assert plan.user == "bob"


def test_a_browser_session_cookie_stores_null_max_age_and_expiry() -> None:
    """max_age=None stores originalMaxAge and expires as null, as express-session does."""
    eng = engine(max_age=None)
    session = eng.build(eng.open(None), None)
    session["x"] = 1
    plan = eng.plan(session, eng.open(None), status=200, secure_request=False)
    assert plan.record is not None
    cookie = plan.record.data[COOKIE]
    assert (cookie["originalMaxAge"], cookie["expires"], cookie["secure"]) == (None, None, False)


def test_the_express_cookie_is_set_as_express_session_sets_it() -> None:
    """Every Set-Cookie of express mode (new, re-sent, deleted) has express-session's attributes: no Max-Age.

    The order is the cookie package's (Domain, Path, Expires, HttpOnly, Secure,
    Partitioned, SameSite); persession's own mode keeps Max-Age and Expires.
    """
    eng = engine(max_age=3600, domain="example.com", samesite="none", partitioned=True, rolling=True)
    session = eng.build(eng.open(None), None)
    session["x"] = 1
    created = eng.plan(session, eng.open(None), status=200, secure_request=True)
    assert created.set_cookie is not None
    value = created.set_cookie.split(";", 1)[0]
    assert created.set_cookie == (
        f"{value}; Domain=example.com; Path=/; Expires=Fri, 15 Jan 2027 09:00:00 GMT;"
        " HttpOnly; Secure; Partitioned; SameSite=None"
    )
    opening = eng.open(value)
    record = Record({COOKIE: {"originalMaxAge": 3_600_000}, "x": 1}, created=NOW, accessed=NOW, expires=NOW + 60)
    resent = eng.plan(eng.build(opening, record), opening, status=200, secure_request=False)
    assert resent.set_cookie == f"{value}; Domain=example.com; Path=/; Expires=Fri, 15 Jan 2027 09:00:00 GMT; HttpOnly"
    gone = eng.build(opening, record)
    gone.destroy()
    deleted = eng.plan(gone, opening, status=200, secure_request=True)
    assert deleted.set_cookie == (
        "connect.sid=; Domain=example.com; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT;"
        " HttpOnly; Secure; Partitioned; SameSite=None"
    )
    own = SessionEngine(SessionConfig(secret=SECRET, max_age=3600), clock=lambda: NOW)
    plain = own.build(own.open(None), None)
    plain["x"] = 1
    set_cookie = own.plan(plain, own.open(None), status=200, secure_request=False).set_cookie or ""
    assert "; Path=/; Max-Age=3600; Expires=Fri, 15 Jan 2027 09:00:00 GMT; HttpOnly; SameSite=Lax" in set_cookie


# -- the codec ---------------------------------------------------------------------------------------


def test_iso_dates_are_javascripts() -> None:
    """iso_date writes Date#toJSON's form (milliseconds, Z) and parse_iso_date reads it back."""
    assert iso_date(0) == "1970-01-01T00:00:00.000Z"
    assert iso_date(1700000000.2509) == "2023-11-14T22:13:20.250Z"
    assert parse_iso_date("2023-11-14T22:13:20.250Z") == 1700000000.25
    for bad in (None, 5, "yesterday", "2023-11-14T22:13:20.250", "2023-13-14T22:13:20.250Z"):
        assert parse_iso_date(bad) is None


def test_encode_keeps_the_cookie_first_and_moves_its_expiry() -> None:
    """encode_express writes the cookie object first with the record's expiry, or a default one."""
    cookie = express_cookie(
        max_age=60, expires=NOW, secure=False, httponly=True, path="/", domain=None, samesite="lax", partitioned=False
    )
    text = encode_express({"a": 1, COOKIE: cookie}, NOW + 60, NOW)
    document = json.loads(text)
    assert list(document) == [COOKIE, "a"]
    assert document[COOKIE]["expires"] == iso_date(NOW + 60)
    default = json.loads(encode_express({"a": "é"}, NOW + 10, NOW))
    assert default[COOKIE] == {"originalMaxAge": 10_000, "expires": iso_date(NOW + 10), "httpOnly": True, "path": "/"}
    assert "é" in encode_express({"a": "é"}, NOW + 10, NOW)


def test_merge_keeps_order_and_the_cookie() -> None:
    """merge_express updates in place, appends new keys, deletes, clears, and never drops the cookie."""
    text = '{"cookie":{"originalMaxAge":1000,"expires":"2020-01-01T00:00:00.000Z"},"a":1,"b":[],"c":{}}'
    merged = json.loads(merge_express(text, Change(set={"b": [2], "d": 4, COOKIE: 0}, deleted=frozenset("c")), NOW))
    assert list(merged) == [COOKIE, "a", "b", "d"]
    assert merged == {COOKIE: {"originalMaxAge": 1000, "expires": iso_date(NOW)}, "a": 1, "b": [2], "d": 4}
    cleared = json.loads(merge_express(text, Change(set={"z": 1}, cleared=True), NOW))
    assert list(cleared) == [COOKIE, "z"]
    browser = '{"cookie":{"originalMaxAge":null,"expires":null},"a":1}'
    assert json.loads(merge_express(browser, Change(set={}), NOW))[COOKIE]["expires"] is None
    assert cookie_expiry(merged) == NOW // 1


@pytest.mark.parametrize("text", ["[1]", '{"a":1}', '{"cookie":"x"}', "{", "null"])
def test_decode_refuses_what_express_session_would_500_on(text: str) -> None:
    """A stored value that is not an object with a cookie object is refused with ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011  (json's and ours alike)
        decode_express(text)


@pytest.mark.parametrize(
    ("cookie", "store_expiry", "expected"),
    [
        pytest.param({"expires": "2020-01-01T00:00:00.000Z"}, NOW + 60, NOW + 60, id="the store's expiry wins"),
        pytest.param({"expires": iso_date(NOW + 60)}, None, float(int(NOW + 60)), id="no store expiry: the cookie's"),
        pytest.param({"expires": None}, None, math.inf, id="browser-session cookie: never"),
        pytest.param({"originalMaxAge": 1000}, None, math.inf, id="no expires member: never"),
        pytest.param({"expires": "2030-01-01"}, None, -math.inf, id="not Date#toJSON's text: past"),
        pytest.param({"expires": "2030-13-01T00:00:00.000Z"}, None, -math.inf, id="no such date: past"),
        pytest.param({"expires": 1_900_000_000_000}, None, -math.inf, id="a number: past"),
    ],
)
def test_record_expiry_is_the_stores_else_the_cookies(
    cookie: dict[str, Any], store_expiry: float | None, expected: float
) -> None:
    """record_expiry: the store's expiry when there is one, else cookie.expires (null: never; unreadable: past)."""
    assert record_expiry({COOKIE: cookie, "a": 1}, store_expiry) == expected
