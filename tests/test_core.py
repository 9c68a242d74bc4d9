"""The sans-IO engine: which session a cookie names, and what a request's end does."""

from __future__ import annotations

import logging
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import pytest

from persession import Change, Record, Session, SessionConfig, SessionTooLarge, StoreUnavailable
from persession.core import Action, Opening, Plan, SessionEngine, add_vary_cookie
from persession.signing import ItsdangerousSigner, new_session_id
from persession.stores import MemoryStore, run_plan

SECRET = b"newest-secret"
OLD_SECRET = b"older-secret"
T0 = 1_700_000_000.0
DAY = 24 * 3600
DEFAULT_MAX_AGE = 14 * DAY


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_engine(clock: FakeClock | None = None, **options: Any) -> SessionEngine:
    """An engine whose config holds the newest and one older secret unless told otherwise."""
    options.setdefault("secret", [SECRET, OLD_SECRET])
    return SessionEngine(SessionConfig(**options), clock=clock or FakeClock())


def cookie_header(engine: SessionEngine, sid: str, secret: bytes = SECRET) -> str:
    """The Cookie request header a browser sends for ``sid`` signed under ``secret``."""
    return f"{engine.config.cookie_name}={ItsdangerousSigner([secret]).sign(sid)}"


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """Name, value and attributes of a Set-Cookie header (flags map to "")."""
    first, *rest = header.split("; ")
    name, _, value = first.partition("=")
    attributes = dict(part.partition("=")[::2] for part in rest)
    return name, value, attributes


def cookie_sid(header: str | None) -> str:
    """The session id a Set-Cookie carries, verified under the newest secret alone."""
    assert header is not None
    unsigned = ItsdangerousSigner([SECRET]).unsign(parse_set_cookie(header)[1])
    assert unsigned is not None
    assert not unsigned.stale
    return unsigned.sid


def open_existing(
    engine: SessionEngine,
    data: dict[str, Any] | None = None,
    *,
    created: float | None = None,
    expires: float | None = None,
    secret: bytes = SECRET,
    read_only: bool = False,
) -> tuple[Session, Opening]:
    """Open a stored session through the cookie, as the shells do."""
    now = engine.clock()
    sid = new_session_id()
    opening = engine.open(cookie_header(engine, sid, secret))
    assert opening.sid == sid
    record = Record(
        dict(data if data is not None else {"a": 1, "b": 2}),
        created=now - 60 if created is None else created,
        accessed=now,
        expires=now + engine.config.idle_seconds if expires is None else expires,
    )
    return engine.build(opening, record, read_only=read_only), opening


def open_new(engine: SessionEngine, cookie: str | None = None, *, read_only: bool = False) -> tuple[Session, Opening]:
    """Open a request that names no stored session."""
    opening = engine.open(cookie)
    assert opening.sid is None
    return engine.build(opening, None, read_only=read_only), opening


def security_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "persession.security"]


def security_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The security records at WARNING and above (each rejection is also logged at DEBUG)."""
    return [record for record in security_records(caplog) if record.levelno >= logging.WARNING]


# -- open ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(None, id="no header"),
        pytest.param("", id="empty header"),
        pytest.param("theme=dark; lang=en", id="other cookies only"),
        pytest.param([], id="no headers in a list"),
    ],
)
def test_open_without_our_cookie(headers: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A request without the session cookie opens no session, quietly."""
    caplog.set_level(logging.DEBUG, logger="persession")
    assert make_engine().open(headers) == Opening(sid=None, present=False, stale=False)
    assert security_records(caplog) == []


def test_open_valid_cookie() -> None:
    """A cookie signed by the newest secret opens its id, not stale."""
    engine = make_engine()
    sid = new_session_id()
    assert engine.open(cookie_header(engine, sid)) == Opening(sid=sid, present=True, stale=False)


def test_open_bad_signature_logs_one_warning_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    """A cookie no secret verifies opens nothing and logs exactly one WARNING naming neither value nor id."""
    caplog.set_level(logging.DEBUG, logger="persession")
    engine = make_engine()
    sid = new_session_id()
    value = ItsdangerousSigner([b"attacker-secret"]).sign(sid)
    opening = engine.open(f"session={value}")
    assert opening == Opening(sid=None, present=True, stale=False)
    records = security_warnings(caplog)
    assert [record.levelno for record in records] == [logging.WARNING]
    assert value not in caplog.text
    assert sid not in caplog.text
    assert sid not in records[0].getMessage()


def test_open_stale_secret() -> None:
    """A cookie signed by an older secret opens its id marked stale."""
    engine = make_engine()
    sid = new_session_id()
    assert engine.open(cookie_header(engine, sid, OLD_SECRET)) == Opening(sid=sid, present=True, stale=True)


def test_open_first_verified_duplicate_wins(caplog: pytest.LogCaptureFixture) -> None:
    """Of several cookies with our name, the first that verifies is used and nothing is logged."""
    caplog.set_level(logging.DEBUG, logger="persession")
    engine = make_engine()
    sid = new_session_id()
    headers = ["session=forged.value", cookie_header(engine, sid), cookie_header(engine, new_session_id())]
    assert engine.open(headers).sid == sid
    assert security_records(caplog) == []


def test_open_uses_the_configured_cookie_name() -> None:
    """Only the configured cookie name is read, including connect-style names with ':'."""
    engine = make_engine(cookie_name="app:sess")
    sid = new_session_id()
    value = ItsdangerousSigner([SECRET]).sign(sid)
    assert engine.open(f"session={value}") == Opening()
    assert engine.open(f"app:sess={value}").sid == sid


# -- build ---------------------------------------------------------------------


def test_build_live_record() -> None:
    """A verified id with a live record gives a session holding its data, id and times, not yet accessed."""
    engine = make_engine()
    sid = new_session_id()
    opening = engine.open(cookie_header(engine, sid))
    session = engine.build(opening, Record({"user": "alice"}, created=T0 - 10, accessed=T0 - 5, expires=T0 + 1))
    assert not session.accessed
    assert not session.read_only
    assert (session.id, session.created, session.expires) == (sid, T0 - 10, T0 + 1)
    assert dict(session) == {"user": "alice"}


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(None, id="missing record"),
        pytest.param(Record({"user": "alice"}, created=T0 - 100, accessed=T0 - 50, expires=T0), id="expires now"),
        pytest.param(Record({"user": "alice"}, created=T0 - 100, accessed=T0 - 50, expires=T0 - 1), id="expired"),
    ],
)
def test_build_missing_or_expired_record_gives_fresh_session(
    record: Record | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A verified id whose record is missing or expired gives a fresh empty session and one id-free warning."""
    caplog.set_level(logging.DEBUG, logger="persession")
    engine = make_engine()
    sid = new_session_id()
    session = engine.build(engine.open(cookie_header(engine, sid)), record)
    assert session.is_new
    assert dict(session) == {}
    assert [r.levelno for r in security_warnings(caplog)] == [logging.WARNING]
    assert sid not in caplog.text


def test_build_without_cookie_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """A request that names no session gets a fresh one without any warning."""
    caplog.set_level(logging.DEBUG, logger="persession")
    engine = make_engine()
    session = engine.build(Opening(), None)
    assert session.is_new
    assert security_records(caplog) == []


def test_client_chosen_id_is_never_adopted() -> None:
    """A cookie naming an id the store does not know never becomes the id of the new session."""
    engine = make_engine()
    chosen = new_session_id()
    opening = engine.open(cookie_header(engine, chosen))
    session = engine.build(opening, None)
    session["user"] = "victim"
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.action is Action.SAVE
    assert plan.sid != chosen
    assert plan.replaces is None
    assert cookie_sid(plan.set_cookie) == plan.sid


def test_build_read_only() -> None:
    """build passes read_only through to the session."""
    engine = make_engine()
    session, _ = open_existing(engine, read_only=True)
    assert session.read_only
    assert session["a"] == 1


# -- plan: which action and which cookie, for every branch ---------------------

NEW, BAD, EXISTING, STALE = "new", "bad cookie", "existing", "stale cookie"


def _noop(session: Session) -> None:
    pass


def _read(session: Session) -> None:
    session.get("a")


def _set(session: Session) -> None:
    session["c"] = 3


def _clear(session: Session) -> None:
    session.clear()


def _delete_all(session: Session) -> None:
    for key in list(session):
        del session[key]


def _destroy_then_set(session: Session) -> None:
    session.destroy()
    session["user"] = "bob"


PLANS = [
    # new sessions
    pytest.param({}, NEW, _noop, {}, Action.NOTHING, None, id="new untouched: nothing, no cookie"),
    pytest.param({}, NEW, _read, {}, Action.NOTHING, None, id="new read only: nothing, no cookie"),
    pytest.param(
        {"save_uninitialized": True}, NEW, _noop, {}, Action.SAVE, "live", id="new untouched, save_uninitialized: save"
    ),
    pytest.param({}, NEW, _set, {}, Action.SAVE, "live", id="new modified: save"),
    pytest.param({}, NEW, Session.touch, {}, Action.SAVE, "live", id="new touched: save"),
    pytest.param({}, NEW, Session.regenerate, {}, Action.SAVE, "live", id="new regenerated: save"),
    pytest.param({}, NEW, Session.destroy, {}, Action.NOTHING, None, id="new destroyed: nothing"),
    pytest.param({"rolling": True}, NEW, _noop, {}, Action.NOTHING, None, id="new untouched, rolling: nothing"),
    # unverifiable cookies
    pytest.param({}, BAD, _noop, {}, Action.NOTHING, "expired", id="bad cookie untouched: expire it"),
    pytest.param({}, BAD, Session.destroy, {}, Action.NOTHING, "expired", id="bad cookie destroyed: expire it"),
    pytest.param({}, BAD, _set, {}, Action.SAVE, "live", id="bad cookie modified: save a new session"),
    # existing sessions
    pytest.param({}, EXISTING, _set, {}, Action.MERGE, "live", id="existing modified: merge + cookie"),
    pytest.param(
        {"max_age": None}, EXISTING, _set, {}, Action.MERGE, None, id="existing modified, browser cookie: merge only"
    ),
    pytest.param(
        {"max_age": None, "rolling": True},
        EXISTING,
        _set,
        {},
        Action.MERGE,
        "live",
        id="existing modified, browser cookie, rolling: merge + cookie",
    ),
    pytest.param({}, EXISTING, _noop, {}, Action.NOTHING, None, id="existing unchanged: nothing"),
    pytest.param({}, EXISTING, _read, {}, Action.NOTHING, None, id="existing read: nothing"),
    pytest.param({"resave": True}, EXISTING, _noop, {}, Action.MERGE, None, id="existing unchanged, resave: merge"),
    pytest.param({"rolling": True}, EXISTING, _noop, {}, Action.TOUCH, "live", id="existing, rolling: touch + cookie"),
    pytest.param({}, EXISTING, Session.touch, {}, Action.TOUCH, "live", id="existing touch(): touch + cookie"),
    pytest.param({}, EXISTING, Session.regenerate, {}, Action.SAVE, "live", id="existing regenerated: save new id"),
    pytest.param({}, EXISTING, Session.destroy, {}, Action.DELETE, "expired", id="existing destroyed: delete"),
    pytest.param({}, EXISTING, _clear, {}, Action.DELETE, "expired", id="existing cleared: delete"),
    pytest.param({}, EXISTING, _delete_all, {}, Action.DELETE, "expired", id="existing emptied key by key: delete"),
    pytest.param({}, EXISTING, _destroy_then_set, {}, Action.SAVE, "live", id="existing destroyed then set: save"),
    pytest.param({}, STALE, _noop, {}, Action.TOUCH, "live", id="stale cookie unchanged: touch + re-issue"),
    pytest.param({}, STALE, _set, {}, Action.MERGE, "live", id="stale cookie modified: merge + re-issue"),
    pytest.param(
        {"max_age": None}, STALE, _set, {}, Action.MERGE, "live", id="stale cookie, browser cookie: still re-issued"
    ),
    # server errors: nothing at all
    pytest.param({}, NEW, _set, {"status": 500}, Action.NOTHING, None, id="500, new modified: nothing"),
    pytest.param({}, EXISTING, _set, {"status": 503}, Action.NOTHING, None, id="503, existing modified: nothing"),
    pytest.param({}, EXISTING, Session.destroy, {"status": 502}, Action.NOTHING, None, id="502, destroyed: nothing"),
    pytest.param({"rolling": True}, EXISTING, _noop, {"status": 599}, Action.NOTHING, None, id="599, rolling: nothing"),
    pytest.param(
        {"save_uninitialized": True}, NEW, _noop, {"status": 500}, Action.NOTHING, None, id="500, uninitialized"
    ),
    pytest.param({}, BAD, _noop, {"status": 500}, Action.NOTHING, None, id="500, bad cookie: not even expired"),
    pytest.param({}, EXISTING, _set, {"status": 499}, Action.MERGE, "live", id="499 still saves"),
    pytest.param({}, NEW, _set, {"status": 404}, Action.SAVE, "live", id="404 still saves"),
    pytest.param({}, EXISTING, _set, {"status": 302}, Action.MERGE, "live", id="redirect still saves"),
    # read-only (websocket) sessions
    pytest.param(
        {"rolling": True}, EXISTING, _read, {"read_only": True}, Action.NOTHING, None, id="read-only rolling: nothing"
    ),
    pytest.param(
        {"save_uninitialized": True},
        NEW,
        _noop,
        {"read_only": True},
        Action.NOTHING,
        None,
        id="read-only uninitialized: nothing",
    ),
    pytest.param({}, STALE, _noop, {"read_only": True}, Action.NOTHING, None, id="read-only stale: no re-issue"),
    # secure=True over plain HTTP: never a cookie
    pytest.param(
        {"secure": True, "save_uninitialized": True},
        NEW,
        _noop,
        {"secure_request": False},
        Action.NOTHING,
        None,
        id="secure on HTTP, uninitialized: nothing",
    ),
    pytest.param(
        {"secure": True}, EXISTING, _set, {"secure_request": True}, Action.MERGE, "live", id="secure on HTTPS: cookie"
    ),
]


@pytest.mark.parametrize(("options", "kind", "app", "request_options", "action", "cookie"), PLANS)
def test_plan(
    options: dict[str, Any],
    kind: str,
    app: Callable[[Session], object],
    request_options: dict[str, Any],
    action: Action,
    cookie: str | None,
) -> None:
    """plan picks the store action and the cookie (none, live or expiring) for each kind of request."""
    engine = make_engine(**options)
    read_only = request_options.get("read_only", False)
    if kind == NEW:
        session, opening = open_new(engine, read_only=read_only)
    elif kind == BAD:
        session, opening = open_new(engine, "session=forged.value", read_only=read_only)
    else:
        secret = OLD_SECRET if kind == STALE else SECRET
        session, opening = open_existing(engine, secret=secret, read_only=read_only)
    old = session.id
    if not read_only:
        app(session)
    else:
        session.get("a")
    plan = engine.plan(
        session,
        opening,
        status=request_options.get("status", 200),
        secure_request=request_options.get("secure_request", True),
    )
    assert plan.action is action
    if action is Action.NOTHING:
        assert (plan.sid, plan.record, plan.change, plan.expires) == (None, None, None, None)
    elif action is Action.SAVE:
        assert plan.sid != old
        assert plan.record is not None
    else:
        assert plan.sid == old
    if cookie is None:
        assert plan.set_cookie is None
    elif cookie == "expired":
        assert plan.set_cookie is not None
        name, value, attributes = parse_set_cookie(plan.set_cookie)
        assert (name, value, attributes["Max-Age"]) == ("session", "", "0")
        assert attributes["Expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    else:
        expected_sid = plan.sid if action is Action.SAVE else old
        assert cookie_sid(plan.set_cookie) == expected_sid


def test_new_modified_session_save_plan() -> None:
    """A new modified session is saved whole under a fresh id with times from the clock, and its cookie carries it."""
    engine = make_engine()
    session, opening = open_new(engine)
    session["user"] = "alice"
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.action is Action.SAVE
    assert plan.sid is not None
    assert len(plan.sid) == 43
    assert plan.replaces is None
    assert plan.record == Record({"user": "alice"}, created=T0, accessed=T0, expires=T0 + DEFAULT_MAX_AGE)
    name, _, attributes = parse_set_cookie(plan.set_cookie or "")
    assert name == "session"
    assert attributes["Max-Age"] == str(DEFAULT_MAX_AGE)
    assert attributes["Expires"] == formatdate(T0 + DEFAULT_MAX_AGE, usegmt=True)
    assert cookie_sid(plan.set_cookie) == plan.sid


def test_save_uninitialized_saves_an_empty_record() -> None:
    """With save_uninitialized a new untouched session is stored empty and gets a cookie."""
    engine = make_engine(save_uninitialized=True)
    session, opening = open_new(engine)
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.record is not None
    assert plan.record.data == {}
    assert cookie_sid(plan.set_cookie) == plan.sid


def test_existing_modified_merges_exactly_the_changed_keys() -> None:
    """An existing session's merge carries only the keys set and deleted, and moves the expiry by idle time."""
    clock = FakeClock()
    engine = make_engine(clock, idle_timeout=600)
    session, opening = open_existing(engine, {"a": 1, "b": 2, "c": 3, "d": 4})
    clock.advance(30)
    session["a"] = 10
    del session["b"]
    session.setdefault("c", 99)
    session.get("d")
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.action is Action.MERGE
    assert plan.change == Change(set={"a": 10}, deleted=frozenset({"b"}))
    assert plan.expires == T0 + 30 + 600
    assert plan.record is None


def test_existing_cleared_then_set_merges_with_cleared() -> None:
    """clear() followed by a set merges as a clear plus the new key, not a delete."""
    engine = make_engine()
    session, opening = open_existing(engine)
    session.clear()
    session["fresh"] = True
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.action is Action.MERGE
    assert plan.change == Change(set={"fresh": True}, cleared=True)


@pytest.mark.parametrize(
    ("app", "change"),
    [
        pytest.param(_noop, Change(set={"a": 1, "b": 2}), id="unchanged: every key"),
        pytest.param(
            lambda s: s.pop("a"), Change(set={"b": 2}, deleted=frozenset({"a"})), id="with a delete: kept as such"
        ),
    ],
)
def test_resave_merges_every_key(app: Callable[[Session], object], change: Change) -> None:
    """With resave every current key is written back, with deletions still recorded."""
    engine = make_engine(resave=True)
    session, opening = open_existing(engine)
    app(session)
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.action is Action.MERGE
    assert plan.change == change


def test_rolling_touches_and_sends_the_cookie_on_every_request() -> None:
    """With rolling, every request of an unchanged session touches it and re-sends the cookie with a fresh Max-Age."""
    clock = FakeClock()
    engine = make_engine(clock, rolling=True, max_age=3600)
    session, opening = open_existing(engine)
    for _ in range(3):
        clock.advance(1)
        plan = engine.plan(session, opening, status=200, secure_request=True)
        assert plan.action is Action.TOUCH
        assert plan.expires == clock.now + 3600
        assert parse_set_cookie(plan.set_cookie or "")[2]["Max-Age"] == "3600"
        assert cookie_sid(plan.set_cookie) == session.id


@pytest.mark.parametrize(
    ("elapsed", "action"),
    [
        pytest.param(0, Action.NOTHING, id="no time passed"),
        pytest.param(499, Action.NOTHING, id="just under half the idle time"),
        pytest.param(500, Action.TOUCH, id="exactly half the idle time"),
        pytest.param(900, Action.TOUCH, id="most of the idle time"),
    ],
)
def test_unchanged_session_touched_only_when_expiry_moves_by_half_idle(elapsed: float, action: Action) -> None:
    """An unchanged session is touched, without a cookie, only once its expiry would move by half the idle time."""
    clock = FakeClock()
    engine = make_engine(clock, idle_timeout=1000)
    session, opening = open_existing(engine, expires=T0 + 1000)
    clock.advance(elapsed)
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.action is action
    assert plan.set_cookie is None
    if action is Action.TOUCH:
        assert plan.sid == session.id
        assert plan.expires == T0 + elapsed + 1000


def test_stale_cookie_is_reissued_under_the_newest_secret() -> None:
    """A cookie verified by an older secret is re-sent for the same id, signed by the newest secret."""
    engine = make_engine()
    session, opening = open_existing(engine, secret=OLD_SECRET)
    assert opening.stale
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert cookie_sid(plan.set_cookie) == session.id
    value = parse_set_cookie(plan.set_cookie or "")[1]
    assert ItsdangerousSigner([OLD_SECRET]).unsign(value) is None


class CountingSigner(ItsdangerousSigner):
    """The default signer, counting its sign() calls."""

    signed = 0

    def sign(self, sid: str) -> str:
        self.signed += 1
        return super().sign(sid)


def _noncanonical(value: str) -> str:
    # The same digest, written with a nonzero unused bit in the last character: it verifies,
    # but it is not what sign() writes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return value[:-1] + alphabet[alphabet.index(value[-1]) + 1]


def test_a_resent_cookie_reuses_the_verified_value_without_signing_again() -> None:
    """A modified session re-sends its cookie: the value it came with, exactly, and no new signature is made."""
    signer = CountingSigner([SECRET, OLD_SECRET])
    engine = SessionEngine(SessionConfig(secret=[SECRET, OLD_SECRET]), signer=signer, clock=FakeClock())
    sid = new_session_id()
    value = ItsdangerousSigner([SECRET]).sign(sid)
    opening = engine.open(f"{engine.config.cookie_name}={value}")
    assert opening.signed == (sid, value)
    session = engine.build(opening, Record({"a": 1}, created=T0 - 60, accessed=T0, expires=T0 + 3600))
    session["a"] = 2
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert parse_set_cookie(plan.set_cookie or "")[1] == value
    assert signer.signed == 0


@pytest.mark.parametrize("kind", ["stale", "noncanonical"])
def test_a_cookie_that_is_not_what_sign_writes_is_signed_afresh(kind: str) -> None:
    """A cookie of an older secret, or a lenient base64 spelling of the right signature, is replaced by sign()'s."""
    engine = make_engine()
    sid = new_session_id()
    value = ItsdangerousSigner([OLD_SECRET if kind == "stale" else SECRET]).sign(sid)
    if kind == "noncanonical":
        value = _noncanonical(value)
    opening = engine.open(f"{engine.config.cookie_name}={value}")
    assert opening.sid == sid
    assert opening.signed is None
    session = engine.build(opening, Record({"a": 1}, created=T0 - 60, accessed=T0, expires=T0 + 3600))
    session["a"] = 2
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert parse_set_cookie(plan.set_cookie or "")[1] == ItsdangerousSigner([SECRET]).sign(sid) != value


def test_a_regenerated_session_never_reuses_the_old_cookie() -> None:
    """The reused value belongs to the cookie's own id: a new id is always signed."""
    engine = make_engine()
    session, opening = open_existing(engine)
    assert opening.signed is not None
    session.regenerate()
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert parse_set_cookie(plan.set_cookie or "")[1] != opening.signed[1]
    assert cookie_sid(plan.set_cookie) == plan.sid != session.id


def test_regenerate_saves_under_a_new_id_replacing_the_old() -> None:
    """regenerate saves the same data and creation time under a new id, replacing the old id."""
    clock = FakeClock()
    engine = make_engine(clock)
    session, opening = open_existing(engine, {"cart": [1]}, created=T0 - 500)
    old = session.id
    session["user"] = "alice"
    session.regenerate()
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.action is Action.SAVE
    assert plan.sid != old
    assert plan.replaces == old
    assert plan.record == Record(
        {"cart": [1], "user": "alice"}, created=T0 - 500, accessed=T0, expires=T0 + DEFAULT_MAX_AGE
    )
    assert cookie_sid(plan.set_cookie) == plan.sid


def test_destroy_then_set_starts_a_new_session() -> None:
    """Data set after destroy is saved as a new session, created now, under a new id that replaces the old one."""
    engine = make_engine()
    session, opening = open_existing(engine, {"user": "alice"}, created=T0 - 500)
    old = session.id
    session.destroy()
    session["flash"] = "logged out"
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.action is Action.SAVE
    assert plan.replaces == old
    assert plan.record is not None
    assert (plan.record.data, plan.record.created) == ({"flash": "logged out"}, T0)


@pytest.mark.parametrize(
    "app",
    [
        pytest.param(Session.destroy, id="destroy"),
        pytest.param(_clear, id="cleared"),
        pytest.param(lambda s: (s.pop("a"), s.pop("b")), id="popped empty"),
    ],
)
def test_ending_a_session_deletes_it_and_expires_the_cookie(app: Callable[[Session], object]) -> None:
    """A destroyed or emptied session is deleted and its cookie expired with the same Path and Domain."""
    engine = make_engine(path="/app", domain="example.com")
    session, opening = open_existing(engine)
    old = session.id
    app(session)
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.action is Action.DELETE
    assert plan.sid == old
    _, value, attributes = parse_set_cookie(plan.set_cookie or "")
    assert value == ""
    assert attributes["Max-Age"] == "0"
    assert attributes["Expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert (attributes["Path"], attributes["Domain"]) == ("/app", "example.com")


@pytest.mark.parametrize("status", [500, 501, 502, 503, 504, 599])
def test_no_save_after_server_error(status: int) -> None:
    """After any 5xx nothing is saved, deleted or touched, and no cookie is sent, whatever the session did."""
    engine = make_engine(rolling=True)
    for app in (_set, _clear, Session.destroy, Session.regenerate, Session.touch):
        session, opening = open_existing(engine)
        app(session)
        plan = engine.plan(session, opening, status=status, secure_request=True)
        assert plan == Plan(vary=True)


def test_unavailable_session_plans_nothing() -> None:
    """A session whose store failed at load plans nothing at all."""
    engine = make_engine(rolling=True, save_uninitialized=True)
    plan = engine.plan(engine.unavailable(StoreUnavailable("down")), Opening(), status=200, secure_request=True)
    assert plan == Plan()


@pytest.mark.parametrize(
    ("secure", "secure_request", "sent", "flag"),
    [
        pytest.param(True, True, True, True, id="True over HTTPS: Secure cookie"),
        pytest.param(True, False, False, None, id="True over HTTP: no cookie"),
        pytest.param("auto", True, True, True, id="auto over HTTPS: Secure cookie"),
        pytest.param("auto", False, True, False, id="auto over HTTP: plain cookie"),
        pytest.param(False, True, True, False, id="False over HTTPS: plain cookie"),
        pytest.param(False, False, True, False, id="False over HTTP: plain cookie"),
    ],
)
def test_secure_option(secure: bool | str, secure_request: bool, sent: bool, flag: bool | None) -> None:
    """The cookie's Secure flag follows secure (or the request, for "auto"), and secure=True never sends over HTTP."""
    engine = make_engine(secure=secure)
    session, opening = open_new(engine)
    session["a"] = 1
    plan = engine.plan(session, opening, status=200, secure_request=secure_request)
    assert (plan.set_cookie is not None) is sent
    if plan.set_cookie is not None:
        assert plan.action is Action.SAVE
        assert ("Secure" in parse_set_cookie(plan.set_cookie)[2]) is flag


@pytest.mark.parametrize(
    ("kind", "app", "options"),
    [
        pytest.param(NEW, _set, {}, id="new, modified"),
        pytest.param(NEW, Session.touch, {}, id="new, touched"),
        pytest.param(EXISTING, _noop, {"rolling": True}, id="existing, rolling"),
        pytest.param(EXISTING, Session.touch, {}, id="existing, touched"),
        pytest.param(EXISTING, Session.regenerate, {}, id="existing, regenerated"),
        pytest.param(STALE, _noop, {}, id="stale cookie"),
    ],
)
def test_secure_true_never_sends_a_cookie_over_plain_http(
    kind: str, app: Callable[[Session], object], options: dict[str, Any]
) -> None:
    """With secure=True no live cookie is ever sent in answer to a plain-HTTP request."""
    engine = make_engine(secure=True, **options)
    session, opening = (
        open_new(engine) if kind == NEW else open_existing(engine, secret=OLD_SECRET if kind == STALE else SECRET)
    )
    app(session)
    assert engine.plan(session, opening, status=200, secure_request=False).set_cookie is None


@pytest.mark.parametrize(
    ("scheme", "forwarded", "proxy", "secure"),
    [
        pytest.param("https", None, False, True, id="https"),
        pytest.param("wss", None, False, True, id="wss"),
        pytest.param("http", None, False, False, id="http"),
        pytest.param("ws", None, False, False, id="ws"),
        pytest.param("http", "https", False, False, id="X-Forwarded-Proto ignored without proxy"),
        pytest.param("https", "http", False, True, id="X-Forwarded-Proto cannot downgrade without proxy"),
        pytest.param("http", "https", True, True, id="proxy: X-Forwarded-Proto https"),
        pytest.param("http", "HTTPS", True, True, id="proxy: case-insensitive"),
        pytest.param("http", "wss", True, True, id="proxy: wss"),
        pytest.param("https", "http", True, False, id="proxy: header says http"),
        pytest.param("http", " https , http", True, True, id="proxy: first of a list"),
        pytest.param("http", "http, https", True, False, id="proxy: first of a list is http"),
        pytest.param("http", None, True, False, id="proxy: no header, scheme decides"),
        pytest.param("https", "", True, True, id="proxy: empty header, scheme decides"),
        pytest.param("http", "https, http", 1, False, id="proxy=1: the rightmost value, http"),
        pytest.param("http", "http, https", 1, True, id="proxy=1: the rightmost value, https"),
        pytest.param("http", "https", 1, True, id="proxy=1: one value"),
        pytest.param("http", " HTTPS ", 1, True, id="proxy=1: case and spaces"),
        pytest.param("http", "https, http, https", 2, False, id="proxy=2: second from the right"),
        pytest.param("http", "http, https, http", 2, True, id="proxy=2: second from the right, https"),
        pytest.param("http", "https", 2, False, id="proxy=2: fewer values than proxies: ignored"),
        pytest.param("https", "http", 2, True, id="proxy=2: fewer values, the scheme decides"),
        pytest.param("http", None, 1, False, id="proxy=1: no header"),
    ],
)
def test_request_is_secure(scheme: str, forwarded: str | None, proxy: bool | int, secure: bool) -> None:
    """A request is secure by its scheme, or by X-Forwarded-Proto only when proxy is on."""
    assert SessionEngine.request_is_secure(scheme, forwarded, proxy=proxy) is secure


def test_absolute_timeout_caps_expiry_and_max_age() -> None:
    """With absolute_timeout, the record's expiry and the cookie's Max-Age never pass creation + the limit."""
    clock = FakeClock()
    engine = make_engine(clock, absolute_timeout=3600)
    session, opening = open_new(engine)
    session["a"] = 1
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.record is not None
    assert plan.record.expires == T0 + 3600
    assert parse_set_cookie(plan.set_cookie or "")[2]["Max-Age"] == "3600"

    clock.advance(3000)
    session, opening = open_existing(engine, created=T0, expires=T0 + 3600)
    session["b"] = 2
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.expires == T0 + 3600
    attributes = parse_set_cookie(plan.set_cookie or "")[2]
    assert attributes["Max-Age"] == "600"
    assert attributes["Expires"] == formatdate(T0 + 3600, usegmt=True)


def test_absolute_timeout_survives_regenerate() -> None:
    """Regenerating keeps the creation time, so it cannot stretch the absolute timeout."""
    clock = FakeClock(T0 + 3000)
    engine = make_engine(clock, absolute_timeout=3600)
    session, opening = open_existing(engine, created=T0, expires=T0 + 3600)
    session.regenerate()
    plan = engine.plan(session, opening, status=200, secure_request=True)
    assert plan.record is not None
    assert (plan.record.created, plan.record.expires) == (T0, T0 + 3600)
    assert parse_set_cookie(plan.set_cookie or "")[2]["Max-Age"] == "600"


def test_idle_timeout_shorter_than_absolute_wins() -> None:
    """When the idle timeout ends first, the expiry is now + idle."""
    engine = make_engine(idle_timeout=600, absolute_timeout=3600)
    session, opening = open_existing(engine, created=T0 - 100)
    session["a"] = 2
    assert engine.plan(session, opening, status=200, secure_request=True).expires == T0 + 600


@pytest.mark.parametrize(
    ("value", "too_large"),
    [
        pytest.param("x" * 56, False, id="exactly the limit"),
        pytest.param("x" * 57, True, id="one byte over"),
        pytest.param("é" * 28, False, id="non-ASCII at the limit in bytes"),
        pytest.param("é" * 29, True, id="non-ASCII over in bytes, under in characters"),
    ],
)
@pytest.mark.parametrize("kind", [NEW, EXISTING])
def test_max_size(kind: str, value: str, too_large: bool) -> None:
    """A session whose UTF-8 JSON is over max_size raises SessionTooLarge at plan time, with size and limit."""
    engine = make_engine(max_size=64)
    session, opening = open_new(engine) if kind == NEW else open_existing(engine, {})
    session["k"] = value  # '{"k":"' + value + '"}' is 8 bytes plus the value
    if too_large:
        with pytest.raises(SessionTooLarge) as excinfo:
            engine.plan(session, opening, status=200, secure_request=True)
        assert excinfo.value.limit == 64
        assert excinfo.value.size == 8 + len(value.encode())
    else:
        assert engine.plan(session, opening, status=200, secure_request=True).action in (Action.SAVE, Action.MERGE)


@pytest.mark.parametrize(
    ("kind", "app", "options", "vary"),
    [
        pytest.param(NEW, _noop, {}, False, id="new, unused"),
        pytest.param(NEW, _read, {}, True, id="new, read"),
        pytest.param(NEW, _set, {}, True, id="new, written"),
        pytest.param(EXISTING, _noop, {}, False, id="existing, unused"),
        pytest.param(EXISTING, _noop, {"rolling": True}, False, id="existing, unused, rolling"),
        pytest.param(EXISTING, lambda s: "a" in s, {}, True, id="existing, membership test"),
        pytest.param(EXISTING, _set, {}, True, id="existing, written"),
        pytest.param(EXISTING, _read, {"status": 500}, True, id="read, then a server error"),
        pytest.param(EXISTING, _noop, {"status": 500}, False, id="unused, then a server error"),
    ],
)
def test_vary_iff_accessed(kind: str, app: Callable[[Session], object], options: dict[str, Any], vary: bool) -> None:
    """plan.vary is true exactly when the application used the session."""
    status = options.pop("status", 200)
    engine = make_engine(**options)
    session, opening = open_new(engine) if kind == NEW else open_existing(engine)
    app(session)
    assert engine.plan(session, opening, status=status, secure_request=True).vary is vary


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        pytest.param(None, "Cookie", id="none"),
        pytest.param("", "Cookie", id="empty"),
        pytest.param("Accept-Encoding", "Accept-Encoding, Cookie", id="appended"),
        pytest.param("Cookie", "Cookie", id="already there"),
        pytest.param("accept, cookie", "accept, cookie", id="already there, lower case"),
        pytest.param("Accept,COOKIE ", "Accept,COOKIE ", id="already there, odd spacing"),
        pytest.param("*", "*", id="star covers everything"),
        pytest.param("Set-Cookie", "Set-Cookie, Cookie", id="Set-Cookie is another header"),
        pytest.param("X-Cookie-Id", "X-Cookie-Id, Cookie", id="substring is not a match"),
    ],
)
def test_add_vary_cookie(existing: str | None, expected: str) -> None:
    """add_vary_cookie adds Cookie to a Vary value unless a token already covers it."""
    assert add_vary_cookie(existing) == expected


# -- request sequences through the engine and a real MemoryStore ---------------


class Browser:
    """One client: keeps the cookie between requests and drives engine + store as a shell would."""

    def __init__(self, engine: SessionEngine, store: MemoryStore) -> None:
        self.engine = engine
        self.store = store
        self.cookie: str | None = None

    @property
    def sid(self) -> str | None:
        if self.cookie is None:
            return None
        unsigned = self.engine.signer.unsign(self.cookie)
        return unsigned.sid if unsigned else None

    def start(self) -> tuple[Session, Opening]:
        header = f"{self.engine.config.cookie_name}={self.cookie}" if self.cookie else None
        opening = self.engine.open(header)
        record = self.store.load(opening.sid) if opening.sid else None
        return self.engine.build(opening, record), opening

    def finish(self, session: Session, opening: Opening, status: int = 200) -> Plan:
        plan = self.engine.plan(session, opening, status=status, secure_request=True)
        run_plan(self.store, plan)
        if plan.set_cookie is not None:
            _, value, attributes = parse_set_cookie(plan.set_cookie)
            self.cookie = None if attributes.get("Max-Age") == "0" else value
        return plan

    def request(self, app: Callable[[Session], object], status: int = 200) -> Plan:
        session, opening = self.start()
        app(session)
        return self.finish(session, opening, status)

    def data(self) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        self.request(lambda s: seen.update(s))
        return seen


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


def test_login_regenerate_keeps_data_under_a_new_id(clock: FakeClock, store: MemoryStore) -> None:
    """Logging in with regenerate moves the data to a new id; the old id is gone and its cookie opens nothing."""
    engine = make_engine(clock)
    browser = Browser(engine, store)
    browser.request(lambda s: s.__setitem__("cart", ["book"]))
    old_sid, old_cookie = browser.sid, browser.cookie
    assert old_sid is not None

    def login(session: Session) -> None:
        session["user"] = "alice"
        session.regenerate()

    plan = browser.request(login)
    assert plan.replaces == old_sid
    assert browser.sid not in (None, old_sid)
    assert store.load(old_sid) is None
    assert len(store) == 1
    assert browser.data() == {"cart": ["book"], "user": "alice"}

    attacker = Browser(engine, store)
    attacker.cookie = old_cookie
    assert attacker.data() == {}
    assert store.load(old_sid) is None


def test_logout_destroys_the_record_and_the_cookie(clock: FakeClock, store: MemoryStore) -> None:
    """Destroying the session deletes its record and the client's cookie; the next request starts empty."""
    engine = make_engine(clock)
    browser = Browser(engine, store)
    browser.request(lambda s: s.__setitem__("user", "alice"))
    sid = browser.sid
    assert sid is not None
    browser.request(Session.destroy)
    assert browser.cookie is None
    assert len(store) == 0
    assert store.load(sid) is None
    assert browser.data() == {}


def test_concurrent_requests_changing_different_keys_both_survive(clock: FakeClock, store: MemoryStore) -> None:
    """Two overlapping requests of one session that set different keys both persist their key."""
    engine = make_engine(clock)
    browser = Browser(engine, store)
    browser.request(lambda s: s.__setitem__("base", 0))
    first, first_opening = browser.start()
    second, second_opening = browser.start()
    first["a"] = 1
    second["b"] = 2
    browser.finish(first, first_opening)
    browser.finish(second, second_opening)
    assert browser.data() == {"base": 0, "a": 1, "b": 2}


def test_slow_request_cannot_resurrect_a_destroyed_session(clock: FakeClock, store: MemoryStore) -> None:
    """A request that finishes after another destroyed the session does not bring it back."""
    engine = make_engine(clock)
    browser = Browser(engine, store)
    browser.request(lambda s: s.__setitem__("user", "alice"))
    sid = browser.sid
    assert sid is not None
    slow, slow_opening = browser.start()
    browser.request(Session.destroy)
    slow["late"] = True
    plan = engine.plan(slow, slow_opening, status=200, secure_request=True)
    assert plan.action is Action.MERGE
    run_plan(store, plan)
    assert store.load(sid) is None
    assert len(store) == 0


def test_idle_expiry_and_activity(clock: FakeClock, store: MemoryStore) -> None:
    """Activity within the idle timeout keeps a session alive; a longer silence ends it."""
    engine = make_engine(clock, idle_timeout=600)
    browser = Browser(engine, store)
    browser.request(lambda s: s.__setitem__("user", "alice"))
    for _ in range(4):
        clock.advance(400)
        assert browser.data() == {"user": "alice"}
    clock.advance(601)
    assert browser.data() == {}


def test_secret_rotation_end_to_end(clock: FakeClock, store: MemoryStore) -> None:
    """After rotating secrets an old cookie keeps its session and is re-issued, so the old secret can then go."""
    before = Browser(make_engine(clock, secret=[OLD_SECRET]), store)
    before.request(lambda s: s.__setitem__("user", "alice"))
    sid = before.sid

    rotated = Browser(make_engine(clock, secret=[SECRET, OLD_SECRET]), store)
    rotated.cookie = before.cookie
    rotated.request(_read)
    assert rotated.sid == sid
    assert rotated.cookie != before.cookie

    after = Browser(make_engine(clock, secret=[SECRET]), store)
    after.cookie = rotated.cookie
    assert after.data() == {"user": "alice"}


def test_no_write_after_server_error_end_to_end(clock: FakeClock, store: MemoryStore) -> None:
    """Changes made by a request that ends in a 5xx are not stored."""
    engine = make_engine(clock)
    browser = Browser(engine, store)
    browser.request(lambda s: s.__setitem__("n", 1))
    browser.request(lambda s: s.__setitem__("n", 2), status=500)
    assert browser.data() == {"n": 1}


def test_regenerating_a_logged_in_session_keeps_it_in_the_user_index() -> None:
    """A bare regenerate() of a session holding a user plans a SAVE that re-indexes it under that user."""
    from persession.core import USER_KEY
    from persession.records import Record

    engine = SessionEngine(SessionConfig(secret="s"))
    sid = engine.signer.new_id()
    opening = engine.open(f"session={engine.signer.sign(sid)}")
    now = engine.clock()
    session = engine.build(opening, Record({USER_KEY: 42}, created=now, accessed=now, expires=now + 60))
    session.regenerate()
    plan = engine.plan(session, opening, status=200, secure_request=False)
    assert plan.replaces == sid
    assert plan.user == "42"


# -- SameSite=None without Secure ----------------------------------------------------------------


def test_samesite_none_over_plain_http_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """secure="auto" + samesite="none": a plain-HTTP cookie goes without SameSite=None, and a WARNING says so once."""
    caplog.set_level(logging.DEBUG, logger="persession")
    engine = make_engine(samesite="none")
    headers = []
    for secure_request in (True, False, False):
        session, opening = open_new(engine)
        session["n"] = 1
        header = engine.plan(session, opening, status=200, secure_request=secure_request).set_cookie
        assert header is not None
        headers.append(parse_set_cookie(header)[2])
    assert headers[0]["SameSite"] == "None"
    assert "Secure" in headers[0]
    assert "SameSite" not in headers[1]
    assert "Secure" not in headers[1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "samesite='none' needs a Secure cookie: on plain-HTTP requests the session cookie goes without"
        " SameSite=None (browsers treat it as Lax). Serve over HTTPS, or set proxy=True behind a"
        " TLS-terminating proxy (logged once per middleware)"
    ]


def test_samesite_none_over_https_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """Over HTTPS, samesite="none" logs nothing."""
    caplog.set_level(logging.DEBUG, logger="persession")
    engine = make_engine(samesite="none")
    session, opening = open_new(engine)
    session["n"] = 1
    assert engine.plan(session, opening, status=200, secure_request=True).set_cookie is not None
    assert caplog.records == []
