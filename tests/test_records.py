"""Records and changes: what the core hands to a store, and their JSON form."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from persession import Change, NotSerializable
from persession.records import dumps, loads

CURRENT = {"a": 1, "b": [1, 2], "c": "x"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(Change(set={}), CURRENT, id="empty change"),
        pytest.param(Change(set={"d": 4}), {**CURRENT, "d": 4}, id="set a new key"),
        pytest.param(Change(set={"a": 10}), {**CURRENT, "a": 10}, id="overwrite a key"),
        pytest.param(Change(set={}, deleted=frozenset({"a"})), {"b": [1, 2], "c": "x"}, id="delete a key"),
        pytest.param(Change(set={}, deleted=frozenset({"zzz"})), CURRENT, id="delete a missing key"),
        pytest.param(Change(set={}, cleared=True), {}, id="clear"),
        pytest.param(Change(set={"d": 4}, cleared=True), {"d": 4}, id="clear then set"),
        pytest.param(Change(set={"a": 0}, deleted=frozenset({"b", "c"})), {"a": 0}, id="set and delete different keys"),
        pytest.param(Change(set={"a": 5}, deleted=frozenset({"a"})), {**CURRENT, "a": 5}, id="set wins over delete"),
    ],
)
def test_apply(change: Change, expected: dict[str, Any]) -> None:
    """Change.apply clears first (if cleared), then deletes, then sets, and returns a new dict."""
    current = json.loads(json.dumps(CURRENT))
    result = change.apply(current)
    assert result == expected
    assert current == CURRENT
    assert result is not current


def test_apply_merges_concurrent_changes() -> None:
    """Two changes to different keys applied one after the other both survive."""
    first = Change(set={"a": "from first"})
    second = Change(set={"b": "from second"}, deleted=frozenset({"c"}))
    assert second.apply(first.apply(CURRENT)) == {"a": "from first", "b": "from second"}


def test_change_is_immutable() -> None:
    """A Change cannot be altered after it is made."""
    change = Change(set={"a": 1})
    with pytest.raises(AttributeError):
        change.cleared = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "text"),
    [
        pytest.param({}, "{}", id="empty"),
        pytest.param({"a": 1, "b": [1, 2]}, '{"a":1,"b":[1,2]}', id="compact separators"),
        pytest.param({"name": "Zoë", "city": "東京"}, '{"name":"Zoë","city":"東京"}', id="non-ASCII kept"),
        pytest.param({"n": None, "t": True, "f": 1.5}, '{"n":null,"t":true,"f":1.5}', id="scalars"),
    ],
)
def test_dumps_is_compact_and_keeps_non_ascii(data: dict[str, Any], text: str) -> None:
    """dumps writes compact JSON with non-ASCII characters as themselves, and loads reads it back."""
    assert dumps(data) == text
    assert loads(text) == data
    assert loads(text.encode("utf-8")) == data


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({1, 2}, id="set"),
        pytest.param(b"raw", id="bytes"),
        pytest.param(object(), id="object"),
        pytest.param(math.nan, id="NaN"),
        pytest.param(-math.inf, id="negative infinity"),
        pytest.param({"deep": [math.nan]}, id="nested NaN"),
    ],
)
def test_dumps_names_the_bad_key(value: object) -> None:
    """dumps raises NotSerializable naming the key whose value JSON refuses."""
    with pytest.raises(NotSerializable) as excinfo:
        dumps({"good": 1, "bad": value})
    assert excinfo.value.key == "bad"
    assert "'bad'" in str(excinfo.value)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[]", id="array"),
        pytest.param("null", id="null"),
        pytest.param("1", id="number"),
        pytest.param('"text"', id="string"),
        pytest.param(b"true", id="bool bytes"),
        pytest.param("{", id="truncated"),
        pytest.param("", id="empty"),
    ],
)
def test_loads_refuses_non_objects(text: str | bytes) -> None:
    """loads raises ValueError for anything but a JSON object."""
    with pytest.raises(ValueError):  # noqa: PT011  (json.JSONDecodeError is a ValueError too)
        loads(text)
