"""connect-redis' Lua ``_CONNECT_WRITE`` in Python: the one express-session merge, for connect-mongo's compare-and-swap.

One semantics for both backends (tests/stores/test_express_engine.py runs both on the same texts): the
members a change names are replaced, deleted or appended as JSON text, every other member is copied byte
for byte, the first of duplicate members wins, and the (last) cookie object goes first with its 'expires'
moved. What counts as JSON is what Redis' cjson accepts (leading zeros, '+1', hex and 'nan' included; a
lone surrogate escape, a raw NUL in a string or 1001 levels of nesting not). The fast path is Python's own
scanner, which accepts a subset of that; whatever it refuses is decided by the slow, cjson-exact one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

from ..codecs import COOKIE, iso_date
from ..exceptions import NotSerializable
from ..records import Change

_COMPACT: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_SCAN: Final[Callable[[str, int], tuple[Any, int]]] = json.JSONDecoder(strict=False).scan_once  # type: ignore[attr-defined]
_WS: Final = re.compile(r"[ \t\n\r]*")
_MAX_DEPTH: Final = 1000  # cjson's decode_max_depth
# C strtod's numbers (Redis runs cjson with decode_invalid_numbers on).
_NUMBER: Final = re.compile(
    r"[+-]?(?:inf(?:inity)?|nan(?:\([0-9a-z_]*\))?|0x(?:[0-9a-f]+(?:\.[0-9a-f]*)?|\.[0-9a-f]+)(?:p[+-]?[0-9]+)?"
    r"|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?)",
    re.ASCII | re.IGNORECASE,
)
_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_ESCAPES: Final = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_ABSENT: Final = object()


def _ws(s: str, i: int, n: int | None = None) -> int:
    found = _WS.match(s, i, len(s) if n is None else n)
    return i if found is None else found.end()


#: ``(name, name as stored, value as stored)`` of one member of a JSON object text.
_Member = tuple[str, str, str]


class Malformed:
    """:func:`splice`'s answer for a text that is not an express-session record (the Lua's ``-1``)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        #: Why, in words that quote nothing of the text.
        self.reason = reason

    def __str__(self) -> str:
        return self.reason

    def __repr__(self) -> str:
        return f"Malformed({self.reason!r})"


_NOT_JSON: Final = Malformed("the record is not JSON")
_NOT_OBJECT: Final = Malformed("the record is not a JSON object")
_NO_COOKIE: Final = Malformed("the record has no cookie object (express-session needs one)")


def _name(key: object) -> str:
    if not isinstance(key, str):
        raise NotSerializable(repr(key), TypeError("session keys must be str"))
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate
        raise NotSerializable(key, error) from None
    return key


def _json(key: str, value: object) -> str:
    try:
        text = _COMPACT.encode(value)
        text.encode("utf-8")
    except (TypeError, ValueError) as error:  # not JSON, NaN, circular, lone surrogate
        raise NotSerializable(key, error) from None
    return text


class Edit:
    """What a write splices in: the Lua's ARGV, derived from a change as ``_connect_write_step`` derives them.

    Built once per write, before any I/O: a value that is not JSON raises
    :class:`~persession.exceptions.NotSerializable` here.
    """

    __slots__ = ("_now", "cleared", "deleted", "expires", "sets")

    def __init__(self, change: Change, expires: float, now: float) -> None:
        self.expires = iso_date(expires)
        self._now = now
        self.cleared = change.cleared
        self.deleted = frozenset() if change.cleared else frozenset(map(_name, change.deleted))
        #: name -> ``"key as JSON":value as JSON``, in the change's order; never the cookie.
        self.sets: dict[str, str] = {}
        for key, value in change.set.items():
            name = _name(key)
            member = _json(name, name) + ":" + _json(name, value)
            if name != COOKIE:
                self.sets[name] = member

    @property
    def now(self) -> str:
        """Now as ``Date#toJSON`` writes it (the Lua's ARGV[3]); only a record without a store expiry needs it."""
        return iso_date(self._now)


# One member's name and colon, and what follows its value, as Python's scanner reads them (control characters
# allowed, as cjson allows them); a name with an escape is decoded by the scanner, which checks the escapes.
_HEAD: Final = re.compile(r'[ \t\n\r]*("[^"\\]*(?:\\.[^"\\]*)*")[ \t\n\r]*:[ \t\n\r]*', re.DOTALL)
_TAIL: Final = re.compile(r"[ \t\n\r]*([,}])")
_EMPTY: Final = re.compile(r"[ \t\n\r]*}")


def _fast_members(s: str, i: int) -> tuple[list[_Member], int, object]:
    """The members of the object at ``s[i]``, its end, and its (last) cookie's value; ValueError if not JSON."""
    out: list[_Member] = []
    cookie: object = _ABSENT
    empty = _EMPTY.match(s, i + 1)
    if empty is not None:
        return out, empty.end(), cookie
    head_at, tail_at, scan, append = _HEAD.match, _TAIL.match, _SCAN, out.append
    i += 1
    while True:
        head = head_at(s, i)
        if head is None:
            raise ValueError
        raw = head.group(1)
        name = scan(raw, 0)[0] if "\\" in raw else raw[1:-1]
        j = head.end()
        value, after = scan(s, j)
        append((name, raw, s[j:after]))
        if name == COOKIE:
            cookie = value
        tail = tail_at(s, after)
        if tail is None:
            raise ValueError
        if tail.group(1) == "}":
            return out, tail.end(), cookie
        i = tail.end()


def _fast(s: str, start: int) -> tuple[list[_Member], list[_Member], object] | None:
    """Top members, cookie members and cookie.expires by Python's scanner; ``None``: let cjson's rules decide."""
    if "\x00" in s or "\\ud" in s or "\\uD" in s or s.count("{") + s.count("[") > _MAX_DEPTH:
        return None
    try:
        top, end, cookie = _fast_members(s, start)
        if _ws(s, end) != len(s):
            return None
        if not isinstance(cookie, dict):
            return top, [], _NO_COOKIE
        last = next(m for m in reversed(top) if m[0] == COOKIE)
        members, _, _ = _fast_members(last[2], 0)
    except (ValueError, StopIteration, RecursionError):
        return None
    return top, members, cookie.get("expires", _ABSENT)


# -- the slow path: cjson's grammar, and the Lua's own member scanner ------------------------------------------


def _cjson_string(s: str, i: int, n: int) -> tuple[str, int] | None:
    """The string token at ``s[i]`` (a quote) decoded as cjson does, and its end; ``None`` if cjson refuses it."""
    out: list[str] = []
    j = i + 1
    while True:
        k = j
        while k < n and s[k] != '"' and s[k] != "\\":
            k += 1
        if k >= n:
            return None  # unterminated, or a raw NUL (the end, to cjson)
        out.append(s[j:k])
        if s[k] == '"':
            return "".join(out), k + 1
        escape = s[k + 1 : k + 2]
        if escape != "u":
            if escape not in _ESCAPES:
                return None
            out.append(_ESCAPES[escape])
            j = k + 2
            continue
        code = _hex4(s, k + 2, n)
        if code is None or 0xDC00 <= code <= 0xDFFF:
            return None
        j = k + 6
        if 0xD800 <= code <= 0xDBFF:
            low = _hex4(s, k + 8, n) if s[k + 6 : k + 8] == "\\u" else None
            if low is None or not 0xDC00 <= low <= 0xDFFF:
                return None
            code = 0x10000 + ((code & 0x3FF) << 10 | (low & 0x3FF))
            j = k + 12
        out.append(chr(code))


def _hex4(s: str, i: int, n: int) -> int | None:
    digits = s[i : i + 4]
    if i + 4 > n or len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        return None
    return int(digits, 16)


def _cjson_scalar(s: str, i: int, n: int) -> int | None:
    """The end of the number or literal at ``s[i]``, by cjson's rules; ``None`` if it is neither."""
    c = s[i : i + 1]
    for word in ("true", "false", "null"):
        if c == word[0] and s.startswith(word, i) and i + len(word) <= n:
            return i + len(word)
    if c == "-" or c == "+" or "0" <= c <= "9" or s[i : i + 3].lower() in ("inf", "nan"):
        found = _NUMBER.match(s, i, n)
        return found.end() if found and found.end() > i else None
    return None


def _cjson_valid(s: str) -> bool:
    """Whether Redis' ``cjson.decode`` accepts ``s`` (iterative: 1000 levels of nesting must not recurse)."""
    n = s.find("\x00")
    n = len(s) if n < 0 else n  # a NUL ends cjson's input
    stack: list[str] = []
    i = _ws(s, 0, n)
    state = "value"
    while True:
        c = s[i : i + 1] if i < n else ""
        if state == "value":
            if c in ("{", "["):
                stack.append(c)
                if len(stack) > _MAX_DEPTH:
                    return False
                i = _ws(s, i + 1, n)
                closer = "}" if c == "{" else "]"
                if s[i : i + 1] == closer and i < n:
                    stack.pop()
                    i += 1
                    state = "after"
                else:
                    state = "key" if c == "{" else "value"
                continue
            if c == '"':
                token = _cjson_string(s, i, n)
                if token is None:
                    return False
                i = token[1]
            else:
                end = _cjson_scalar(s, i, n)
                if end is None:
                    return False
                i = end
            state = "after"
        elif state == "key":
            token = _cjson_string(s, i, n) if c == '"' else None
            if token is None:
                return False
            i = _ws(s, token[1], n)
            if s[i : i + 1] != ":" or i >= n:
                return False
            i = _ws(s, i + 1, n)
            state = "value"
            continue
        i = _ws(s, i, n)
        c = s[i : i + 1] if i < n else ""
        if not stack:
            return c == ""
        if c == ",":
            i = _ws(s, i + 1, n)
            state = "key" if stack[-1] == "{" else "value"
        elif c == ("}" if stack[-1] == "{" else "]"):
            stack.pop()
            i += 1
        else:
            return False


def _skip_string(s: str, i: int) -> int | None:
    j = i + 1
    while True:
        k = _QUOTE_OR_ESCAPE.search(s, j)
        if k is None:
            return None
        if s[k.start()] == "\\":
            j = k.start() + 2
        else:
            return k.start() + 1


_QUOTE_OR_ESCAPE: Final = re.compile(r'["\\]')
_NESTED: Final = re.compile(r'["{}\[\]]')
_SCALAR_END: Final = re.compile(r"[,}\] \t\r\n]")
_NON_WS: Final = re.compile(r"[^ \t\r\n]")


def _skip_value(s: str, i: int) -> int | None:
    c = s[i]
    if c == '"':
        return _skip_string(s, i)
    if c in "{[":
        depth, j = 0, i
        while True:
            found = _NESTED.search(s, j)
            if found is None:
                return None
            k = found.start()
            if s[k] == '"':
                end = _skip_string(s, k)
                if end is None:
                    return None
                j = end
            else:
                depth += 1 if s[k] in "{[" else -1
                j = k + 1
                if depth == 0:
                    return j
    found = _SCALAR_END.search(s, i)
    return len(s) if found is None else found.start()


def _skip_ws(s: str, i: int) -> int | None:
    found = _NON_WS.search(s, i)
    return None if found is None else found.start()


def _lua_members(s: str) -> list[_Member] | None:
    """The Lua's ``members``: the members of a (cjson-valid) object text, names decoded as cjson does."""
    out: list[_Member] = []
    i = _skip_ws(s, 0)
    if i is None or s[i] != "{":
        return None
    i = _skip_ws(s, i + 1)
    if i is None:
        return None
    if s[i] == "}":
        return out
    while True:
        if s[i] != '"':
            return None
        begin, stop = i, _skip_string(s, i)
        name = None if stop is None else _cjson_string(s, i, stop)
        if stop is None or name is None:
            return None
        at = _skip_ws(s, stop)
        if at is None or s[at] != ":":
            return None
        at = _skip_ws(s, at + 1)
        if at is None:
            return None
        after = _skip_value(s, at)
        if after is None or after <= at:
            return None
        out.append((name[0], s[begin:stop], s[at:after]))
        at = _skip_ws(s, after)
        if at is None:
            return None
        if s[at] == "}":
            return out
        if s[at] != ",":
            return None
        at = _skip_ws(s, at + 1)
        if at is None:
            return None
        i = at


def _slow(s: str) -> tuple[list[_Member], list[_Member], object] | Malformed:
    if not _cjson_valid(s):
        return _NOT_JSON
    top = _lua_members(s)
    if top is None:
        return _NOT_OBJECT
    cookies = [m for m in top if m[0] == COOKIE]
    members = _lua_members(cookies[-1][2]) if cookies else None
    if members is None:
        return _NO_COOKIE
    expires: object = _ABSENT
    for name, _, value in members:
        if name == "expires":
            expires = value
    if isinstance(expires, str):  # as cjson decodes it: None for null, a str, or anything else
        if expires == "null":
            expires = None
        elif expires.startswith('"'):
            token = _cjson_string(expires, 0, len(expires))
            expires = None if token is None else token[0]
        else:
            expires = 0
    return top, members, expires


def _ahead(at: object, edit: Edit) -> bool:
    """A cookie.expires that keeps a record alive: ``Date#toJSON``'s text, later than now (texts compare as dates)."""
    return isinstance(at, str) and _DATE.fullmatch(at) is not None and at > edit.now


def splice(text: str, edit: Edit, *, keeps_expiry: bool) -> str | Malformed | None:
    """``text`` with ``edit`` spliced in, exactly as connect-redis' Lua ``_CONNECT_WRITE`` splices it.

    ``keeps_expiry`` says the store keeps an expiry of its own (a TTL, an
    ``expires`` field); without one, a text whose ``cookie.expires`` is not a
    ``Date#toJSON`` text still ahead of ``edit.now`` is dead: ``None``, never
    written again. :class:`Malformed` for a text that is not an
    express-session record (the caller leaves it as it is).
    """
    start = _ws(text, 0)
    if text[start : start + 1] != "{":
        return _NOT_JSON if not _cjson_valid(text) else _NOT_OBJECT
    parsed = _fast(text, start) or _slow(text)
    if isinstance(parsed, Malformed):
        return parsed
    top, cookie, at = parsed
    if isinstance(at, Malformed):
        return at
    if not keeps_expiry and at is not _ABSENT and at is not None and not _ahead(at, edit):
        return None  # connect-redis' disableTTL, or no expires field: the cookie's date has passed
    persistent = any(name in ("expires", "originalMaxAge") and value != "null" for name, _, value in cookie)
    expires = f'"{edit.expires}"' if persistent else "null"
    parts = [raw + ":" + (expires if name == "expires" else value) for name, raw, value in cookie]
    if not any(name == "expires" for name, _, _ in cookie):
        parts.append('"expires":' + expires)
    out = ['"cookie":{' + ",".join(parts) + "}"]
    sets, deleted = edit.sets, edit.deleted
    written: set[str] = set()
    if not edit.cleared:
        for name, raw, value in top:
            if name == COOKIE or name in written:
                continue
            if name in sets:
                out.append(sets[name])
                written.add(name)
            elif name not in deleted:
                out.append(raw + ":" + value)
                written.add(name)
    out.extend(member for name, member in sets.items() if name not in written)
    return "{" + ",".join(out) + "}"
