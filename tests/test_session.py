"""Session: a dict that records what a request read and changed."""

from __future__ import annotations

import copy
import json
import math
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persession import (
    Change,
    ConfigError,
    NotSerializable,
    Session,
    SessionConfig,
    SessionReadOnly,
    StoreError,
    StoreUnavailable,
)
from persession._variants import FailedSession, combine
from persession.core import SessionEngine
from persession.wsgi import DeferredSession


def stored(data: dict[str, Any] | None = None, **kwargs: Any) -> Session:
    """A session as the engine builds it from a stored record."""
    return Session(data if data is not None else {"a": 1, "b": 2}, id="x" * 43, created=0.0, expires=100.0, **kwargs)


def test_session_is_a_dict() -> None:
    """A Session is a dict, so frameworks and json.dumps accept it."""
    session = stored({"user": "alice", "n": [1, 2], "name": "Zoë"})
    assert isinstance(session, dict)
    assert json.loads(json.dumps(session)) == {"user": "alice", "n": [1, 2], "name": "Zoë"}
    assert session == {"user": "alice", "n": [1, 2], "name": "Zoë"}


def test_new_session_state() -> None:
    """A session built without an id is new, unread, unmodified and has no lifecycle flag set."""
    session = Session()
    assert session.is_new
    assert session.id is None
    assert not session.accessed
    assert not session.modified
    assert (session.regenerated, session.destroyed, session.touched) == (False, False, False)
    assert session.failed is None
    assert session.changes() == Change(set={})


def test_stored_session_is_not_new() -> None:
    """A session built with an id is not new and keeps its times."""
    session = stored()
    assert not session.is_new
    assert (session.created, session.expires) == (0.0, 100.0)


def test_repr_lists_keys_only_without_marking_access() -> None:
    """repr shows the keys, never the values, and does not count as a read."""
    session = stored({"b": "secret-value", "a": 1})
    assert repr(session) == "<Session keys=['a', 'b']>"
    assert not session.accessed


MUTATIONS: list[Any] = [
    pytest.param(lambda s: s.__setitem__("c", 3), Change(set={"c": 3}), {"a": 1, "b": 2, "c": 3}, id="setitem new"),
    pytest.param(lambda s: s.__setitem__("a", 10), Change(set={"a": 10}), {"a": 10, "b": 2}, id="setitem overwrite"),
    pytest.param(lambda s: s.__delitem__("a"), Change(set={}, deleted=frozenset({"a"})), {"b": 2}, id="delitem"),
    pytest.param(lambda s: s.clear(), Change(set={}, cleared=True), {}, id="clear"),
    pytest.param(lambda s: s.pop("a"), Change(set={}, deleted=frozenset({"a"})), {"b": 2}, id="pop"),
    pytest.param(
        lambda s: s.popitem(), Change(set={}, deleted=frozenset({"b"})), {"a": 1}, id="popitem takes the last key"
    ),
    pytest.param(lambda s: s.setdefault("c", 3), Change(set={"c": 3}), {"a": 1, "b": 2, "c": 3}, id="setdefault new"),
    pytest.param(
        lambda s: s.update({"a": 5, "c": 3}), Change(set={"a": 5, "c": 3}), {"a": 5, "b": 2, "c": 3}, id="update dict"
    ),
    pytest.param(lambda s: s.update([("c", 3)]), Change(set={"c": 3}), {"a": 1, "b": 2, "c": 3}, id="update pairs"),
    pytest.param(lambda s: s.update(c=3), Change(set={"c": 3}), {"a": 1, "b": 2, "c": 3}, id="update kwargs"),
    pytest.param(lambda s: s.__ior__({"c": 3}), Change(set={"c": 3}), {"a": 1, "b": 2, "c": 3}, id="ior"),
    pytest.param(
        lambda s: (s.__delitem__("a"), s.__setitem__("a", 7)),
        Change(set={"a": 7}),
        {"a": 7, "b": 2},
        id="delete then set again",
    ),
    pytest.param(
        lambda s: (s.__setitem__("c", 3), s.__delitem__("c")),
        Change(set={}, deleted=frozenset({"c"})),
        {"a": 1, "b": 2},
        id="set then delete",
    ),
    pytest.param(
        lambda s: (s.clear(), s.__setitem__("z", 0)),
        Change(set={"z": 0}, cleared=True),
        {"z": 0},
        id="clear then set",
    ),
    pytest.param(lambda s: s.mark_modified("a"), Change(set={"a": 1}), {"a": 1, "b": 2}, id="mark_modified key"),
    pytest.param(lambda s: s.mark_modified(), Change(set={"a": 1, "b": 2}), {"a": 1, "b": 2}, id="mark_modified all"),
]


@pytest.mark.parametrize(("mutate", "change", "data"), MUTATIONS)
def test_mutators_are_tracked(mutate: Callable[[Session], object], change: Change, data: dict[str, Any]) -> None:
    """Every mutator marks the session modified and accessed, and changes() reports exactly what it did."""
    session = stored()
    mutate(session)
    assert session.modified
    assert session.accessed
    assert session.changes() == change
    assert dict(session) == data
    assert change.apply({"a": 1, "b": 2}) == data


def test_ior_operator_updates_in_place() -> None:
    """session |= other updates the same Session object and tracks the keys."""
    session = stored()
    original = session
    session |= {"c": 3}
    assert session is original
    assert isinstance(session, Session)
    assert session.changes() == Change(set={"c": 3})


NON_CHANGES: list[Any] = [
    pytest.param(lambda s: s.setdefault("a", 99), id="setdefault on an existing key"),
    pytest.param(lambda s: s.pop("missing", None), id="pop of a missing key with a default"),
    pytest.param(lambda s: s.update({}), id="empty update"),
    pytest.param(lambda s: s.mark_modified("missing"), id="mark_modified of a missing key"),
]


@pytest.mark.parametrize("call", NON_CHANGES)
def test_calls_that_change_nothing_are_not_modifications(call: Callable[[Session], object]) -> None:
    """A mutator call that changes no data marks the session accessed but not modified."""
    session = stored()
    call(session)
    assert session.accessed
    assert not session.modified
    assert dict(session) == {"a": 1, "b": 2}


def test_setdefault_returns_the_existing_value() -> None:
    """setdefault keeps and returns an existing value."""
    session = stored()
    assert session.setdefault("a", 99) == 1
    assert session.setdefault("c", 3) == 3


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s: s.pop("missing"), id="pop missing"),
        pytest.param(lambda s: s.__delitem__("missing"), id="del missing"),
        pytest.param(lambda s: Session().popitem(), id="popitem on empty"),
    ],
)
def test_failed_removals_raise_key_error_and_record_nothing(call: Callable[[Session], object]) -> None:
    """Removing a missing key raises KeyError, as dict does, and records no change."""
    session = stored()
    with pytest.raises(KeyError):
        call(session)
    assert not session.modified
    assert session.changes() == Change(set={})


READS: list[Any] = [
    pytest.param(lambda s: s.get("a"), id="get"),
    pytest.param(lambda s: s.get("missing", 0), id="get missing"),
    pytest.param(lambda s: s["a"], id="getitem"),
    pytest.param(lambda s: "a" in s, id="in"),
    pytest.param(lambda s: list(iter(s)), id="iter"),
    pytest.param(lambda s: len(s), id="len"),
    pytest.param(lambda s: bool(s), id="bool"),
    pytest.param(lambda s: s.keys(), id="keys"),
    pytest.param(lambda s: s.values(), id="values"),
    pytest.param(lambda s: s.items(), id="items"),
    pytest.param(lambda s: s.copy(), id="copy"),
    pytest.param(lambda s: dict(s), id="dict()"),
    pytest.param(json.dumps, id="json.dumps"),
    pytest.param(lambda s: s.mark_accessed(), id="mark_accessed"),
]


@pytest.mark.parametrize("read", READS)
def test_reads_mark_accessed_but_not_modified(read: Callable[[Session], object]) -> None:
    """Every way of reading the session sets .accessed and leaves .modified false."""
    session = stored()
    before = session.accessed
    read(session)
    assert (before, session.accessed) == (False, True)
    assert not session.modified


def test_copy_is_a_plain_dict() -> None:
    """copy() gives a plain dict detached from the session."""
    session = stored()
    copied = session.copy()
    assert type(copied) is dict
    copied["a"] = 100
    assert session["a"] == 1


BAD_VALUES: list[Any] = [
    pytest.param({1, 2}, id="set"),
    pytest.param(b"bytes", id="bytes"),
    pytest.param(object(), id="object"),
    pytest.param(math.nan, id="NaN"),
    pytest.param(math.inf, id="infinity"),
    pytest.param({"nested": {3, 4}}, id="nested set"),
    pytest.param([1, b"x"], id="bytes inside a list"),
]


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize(
    "assign",
    [
        pytest.param(lambda s, v: s.__setitem__("bad", v), id="setitem"),
        pytest.param(lambda s, v: s.update({"bad": v}), id="update"),
        pytest.param(lambda s, v: s.setdefault("bad", v), id="setdefault"),
        pytest.param(lambda s, v: s.__ior__({"bad": v}), id="ior"),
    ],
)
def test_non_json_value_raises_not_serializable_naming_the_key(
    assign: Callable[[Session, object], object], value: object
) -> None:
    """Storing a value JSON cannot encode raises NotSerializable naming the key, and stores nothing."""
    session = stored()
    with pytest.raises(NotSerializable) as excinfo:
        assign(session, value)
    assert excinfo.value.key == "bad"
    assert "'bad'" in str(excinfo.value)
    assert isinstance(excinfo.value, TypeError)
    assert "bad" not in dict(session)
    assert not session.modified


@pytest.mark.parametrize(
    "key",
    [pytest.param(1, id="int"), pytest.param(None, id="None"), pytest.param(("a", "b"), id="tuple")],
)
def test_non_str_key_raises_not_serializable_naming_the_key(key: Any) -> None:
    """A key that is not a str raises NotSerializable whose .key is the key's repr."""
    session = stored()
    with pytest.raises(NotSerializable) as excinfo:
        session[key] = "value"
    assert excinfo.value.key == repr(key)
    assert not session.modified


def test_mark_modified_rechecks_the_value() -> None:
    """mark_modified(key) refuses a value that was made non-JSON in place."""
    session = stored({"cart": []})
    session["cart"].append(b"raw")
    with pytest.raises(NotSerializable) as excinfo:
        session.mark_modified("cart")
    assert excinfo.value.key == "cart"


def test_nested_change_needs_mark_modified() -> None:
    """An in-place change to a nested value is invisible until mark_modified names the key."""
    session = stored({"cart": [1]})
    session["cart"].append(2)
    assert not session.modified
    session.mark_modified("cart")
    assert session.changes() == Change(set={"cart": [1, 2]})


@pytest.mark.parametrize(
    ("verb", "flag"),
    [
        pytest.param(Session.regenerate, "regenerated", id="regenerate"),
        pytest.param(Session.destroy, "destroyed", id="destroy"),
        pytest.param(Session.touch, "touched", id="touch"),
    ],
)
def test_lifecycle_verbs_set_their_flag_only(verb: Callable[[Session], None], flag: str) -> None:
    """Each lifecycle verb sets its own flag, marks the session accessed, and leaves the others alone."""
    session = stored()
    verb(session)
    flags = {name: getattr(session, name) for name in ("regenerated", "destroyed", "touched")}
    assert flags == {name: name == flag for name in flags}
    assert session.accessed


def test_regenerate_keeps_data_and_is_not_a_modification() -> None:
    """regenerate() keeps the data and records no data change."""
    session = stored()
    session.regenerate()
    assert dict(session) == {"a": 1, "b": 2}
    assert not session.modified


def test_destroy_empties_the_session_and_forgets_changes() -> None:
    """destroy() removes every key and discards changes and a pending regenerate."""
    session = stored()
    session["c"] = 3
    del session["a"]
    session.regenerate()
    session.destroy()
    assert dict(session) == {}
    assert session.destroyed
    assert not session.regenerated
    assert not session.modified
    assert session.changes() == Change(set={})


def test_set_after_destroy_starts_fresh_data() -> None:
    """Data set after destroy() forms a new session holding only the new keys."""
    session = stored()
    session.destroy()
    session["user"] = "bob"
    assert dict(session) == {"user": "bob"}
    assert session.destroyed
    assert session.changes() == Change(set={"user": "bob"})


READ_ONLY_WRITES: list[Any] = [
    pytest.param(lambda s: s.__setitem__("c", 3), id="setitem"),
    pytest.param(lambda s: s.__delitem__("a"), id="delitem"),
    pytest.param(lambda s: s.clear(), id="clear"),
    pytest.param(lambda s: s.pop("a"), id="pop"),
    pytest.param(lambda s: s.pop("missing", None), id="pop missing with default"),
    pytest.param(lambda s: s.popitem(), id="popitem"),
    pytest.param(lambda s: s.setdefault("c", 3), id="setdefault"),
    pytest.param(lambda s: s.update(c=3), id="update"),
    pytest.param(lambda s: s.__ior__({"c": 3}), id="ior"),
    pytest.param(lambda s: s.regenerate(), id="regenerate"),
    pytest.param(lambda s: s.destroy(), id="destroy"),
    pytest.param(lambda s: s.touch(), id="touch"),
    pytest.param(lambda s: s.mark_modified(), id="mark_modified"),
]


@pytest.mark.parametrize("write", READ_ONLY_WRITES)
def test_read_only_session_refuses_writes(write: Callable[[Session], object]) -> None:
    """Every write to a read-only session raises SessionReadOnly and leaves the data and flags unchanged."""
    session = stored(read_only=True)
    with pytest.raises(SessionReadOnly):
        write(session)
    assert dict(session) == {"a": 1, "b": 2}
    assert not session.modified
    assert (session.regenerated, session.destroyed, session.touched) == (False, False, False)


@pytest.mark.parametrize("read", READS)
def test_read_only_session_allows_reads(read: Callable[[Session], object]) -> None:
    """Reads of a read-only session work and mark it accessed."""
    session = stored(read_only=True)
    read(session)
    assert session.accessed


# json.dumps is left out: CPython's C encoder answers "{}" for an empty dict
# subclass without calling any of its methods, so there is no hook to raise from.
UNAVAILABLE_USES: list[Any] = [
    *(read for read in READS if read.id != "json.dumps"),
    pytest.param(lambda s: s.__setitem__("a", 1), id="setitem"),
    pytest.param(lambda s: s.pop("a", None), id="pop"),
    pytest.param(lambda s: s.clear(), id="clear"),
    pytest.param(lambda s: s.update(a=1), id="update"),
    pytest.param(lambda s: s.regenerate(), id="regenerate"),
    pytest.param(lambda s: s.destroy(), id="destroy"),
    pytest.param(lambda s: s.touch(), id="touch"),
]


@pytest.mark.parametrize("use", UNAVAILABLE_USES)
def test_unavailable_session_raises_the_store_error_on_any_use(use: Callable[[Session], object]) -> None:
    """A session whose store failed at load raises that very StoreError on every read or write."""
    error = StoreUnavailable("the store is down")
    session = FailedSession(error)
    with pytest.raises(StoreError) as excinfo:
        use(session)
    assert excinfo.value is error
    assert session.failed is error
    assert session.accessed  # the attempt is recorded, so the shells know the 500 came from it


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_is_refused(protocol: int) -> None:
    """Pickling a Session raises TypeError at every protocol: sessions are JSON only."""
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(stored(), protocol=protocol)


def test_copy_module_is_refused_too() -> None:
    """copy.copy, which goes through the pickle protocol, raises TypeError rather than sharing state."""
    with pytest.raises(TypeError):
        copy.copy(stored())


_KEYS = st.one_of(st.text(max_size=8), st.sampled_from(["\ud800", "é", 1, None, b"k"]))
_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=8),
        st.sampled_from(["\udfff", "a\ud800", "\x00"]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@given(key=_KEYS, value=_VALUES)
def test_setting_accepts_exactly_what_the_stores_can_encode(key: Any, value: Any) -> None:
    """The set-time check (with its shortcut for plain scalars) refuses a value iff strict UTF-8 JSON refuses it."""
    try:
        json.dumps({key: value}, ensure_ascii=False, allow_nan=False).encode("utf-8")
        encodable = isinstance(key, str)
    except (TypeError, ValueError):
        encodable = False
    session = Session()
    if encodable:
        session[key] = value
        assert dict.__getitem__(session, key) == value
    else:
        with pytest.raises(NotSerializable):
            session[key] = value


# -- deferred loading (the WSGI middleware's prefetch) --------------------------------------------


class Loader:
    """A loader for :class:`~persession.wsgi.DeferredSession` that counts its calls."""

    def __init__(self, result: Session) -> None:
        self.result = result
        self.calls = 0

    def __call__(self, session: DeferredSession) -> None:
        self.calls += 1
        result = self.result
        if result.failed is not None:
            session.fail(result.failed)
        elif result.id is not None:
            assert result.created is not None
            assert result.expires is not None
            session.fill(result.id, (dict(result), result.created, result.expires), refreshed=result.refreshed)


def deferred(result: Session | None = None) -> tuple[Session, Loader]:
    loader = Loader(result if result is not None else stored({"user": "alice", "n": 1}, refreshed=True))
    return DeferredSession(loader), loader


#: Every way of reading a session, and what it gives for the data of :func:`deferred`.
READS: list[tuple[str, Callable[[Session], Any], Any]] = [
    ("getitem", lambda s: s["user"], "alice"),
    ("get", lambda s: s.get("user"), "alice"),
    ("contains", lambda s: "user" in s, True),
    ("len", len, 2),
    ("bool", bool, True),
    ("iter", lambda s: sorted(s), ["n", "user"]),
    ("keys", lambda s: sorted(s.keys()), ["n", "user"]),
    ("values", lambda s: sorted(map(str, s.values())), ["1", "alice"]),
    ("items", lambda s: sorted(s.items()), [("n", 1), ("user", "alice")]),
    ("copy", lambda s: s.copy(), {"user": "alice", "n": 1}),
    ("dict", dict, {"user": "alice", "n": 1}),
    ("unpack", lambda s: {**s}, {"user": "alice", "n": 1}),
    ("json", lambda s: json.loads(json.dumps(s)), {"user": "alice", "n": 1}),
    ("eq", lambda s: s == {"user": "alice", "n": 1}, True),
    ("ne", lambda s: s != {"user": "alice", "n": 1}, False),
    ("or", lambda s: s | {"x": 2}, {"user": "alice", "n": 1, "x": 2}),
    ("ror", lambda s: {"x": 2} | s, {"user": "alice", "n": 1, "x": 2}),
    ("reversed", lambda s: sorted(reversed(s)), ["n", "user"]),
    ("id", lambda s: s.id, "x" * 43),
    ("is_new", lambda s: s.is_new, False),
    ("created", lambda s: s.created, 0.0),
    ("expires", lambda s: s.expires, 100.0),
    ("failed", lambda s: s.failed, None),
]


@pytest.mark.parametrize(("read", "expected"), [(r, e) for _, r, e in READS], ids=[name for name, _, _ in READS])
def test_deferred_session_loads_at_its_first_read(read: Callable[[Session], Any], expected: Any) -> None:
    session, loader = deferred()
    assert not session.loaded
    assert loader.calls == 0
    assert read(session) == expected
    assert session.loaded
    assert read(session) == expected
    assert loader.calls == 1


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.__setitem__("k", 1),
        lambda s: s.update(k=1),
        lambda s: s.setdefault("k", 1),
        lambda s: s.pop("n"),
        lambda s: s.__delitem__("n"),
        lambda s: s.clear(),
        lambda s: s.mark_modified(),
        Session.regenerate,
        Session.touch,
        Session.destroy,
    ],
    ids=[
        "setitem",
        "update",
        "setdefault",
        "pop",
        "delitem",
        "clear",
        "mark_modified",
        "regenerate",
        "touch",
        "destroy",
    ],
)
def test_deferred_session_loads_before_its_first_change(write: Callable[[Session], Any]) -> None:
    session, loader = deferred()
    write(session)
    assert loader.calls == 1
    assert session.id == "x" * 43
    assert session.refreshed
    if not session.destroyed and not session._cleared:
        assert session["user"] == "alice", "a change is made to the loaded data, not to an empty dict"


def test_deferred_session_state_that_needs_no_data_does_not_load() -> None:
    session, loader = deferred()
    assert repr(session) == "<Session (not loaded yet)>"
    assert not session.accessed
    assert not session.modified
    assert not session.read_only
    assert (session.regenerated, session.destroyed, session.touched) == (False, False, False)
    assert loader.calls == 0
    session.ensure_loaded()
    session.ensure_loaded()
    assert loader.calls == 1
    assert repr(session) == "<Session keys=['n', 'user']>"
    assert not session.accessed, "loading is not using"


def test_deferred_session_whose_load_failed_raises_at_each_use() -> None:
    error = StoreUnavailable("Redis store unavailable: down")
    session, loader = deferred(FailedSession(error))
    with pytest.raises(StoreUnavailable) as raised:
        session.get("user")
    assert raised.value is error
    assert session.failed is error
    with pytest.raises(StoreUnavailable):
        session["k"] = 1
    assert loader.calls == 1


def test_deferred_session_of_an_unknown_id_is_new() -> None:
    session, _ = deferred(Session())
    assert session.is_new
    assert dict(session) == {}


# -- variants: a failed or deferred session of an application's Session subclass ---------------


class AppSession(Session):
    """An application's session class, as Flask's integration defines one."""

    __slots__ = ()

    @property
    def shout(self) -> str:
        return str(self.get("user", "")).upper()


def test_a_failed_session_of_a_subclass_keeps_the_subclass() -> None:
    """combine() gives the failure behaviour on the application's class: isinstance of both, one type per pair."""
    error = StoreUnavailable("down")
    failed = combine(FailedSession, AppSession)(error)
    assert isinstance(failed, AppSession)
    assert isinstance(failed, FailedSession)
    assert type(failed).__name__ == "AppSession"
    assert combine(FailedSession, AppSession) is type(failed)
    assert combine(FailedSession, Session) is FailedSession
    with pytest.raises(StoreUnavailable):
        failed.shout  # noqa: B018  (the property reads the session)


def test_a_deferred_session_of_a_subclass_loads_at_its_first_use() -> None:
    session = combine(DeferredSession, AppSession)(Loader(stored({"user": "alice"})))
    assert isinstance(session, AppSession)
    assert not session.loaded
    assert session.shout == "ALICE"
    assert session.loaded


def test_a_session_class_with_slots_of_its_own_is_refused() -> None:
    """A subclass adding slots cannot be combined: the engine refuses it at once, naming session_class."""

    class Slotted(Session):
        __slots__ = ("extra",)

    with pytest.raises(ConfigError, match="session_class"):
        SessionEngine(SessionConfig(secret="s" * 32), session_class=Slotted)
    with pytest.raises(ConfigError, match="session_class"):
        SessionEngine(SessionConfig(secret="s" * 32), session_class=dict)  # type: ignore[arg-type]
