"""Cookie headers: defensive parsing of Cookie, rendering of Set-Cookie."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _node import INSTALLS, NodeInstall, node_eval
from persession import ConfigError
from persession.cookies import MAX_VALUE_LENGTH, CookieFormat, _http_date, cookie_values, render_set_cookie

Headers = str | bytes | Iterable[str | bytes] | None


@pytest.mark.parametrize(
    ("headers", "name", "expected"),
    [
        pytest.param(None, "session", [], id="no header"),
        pytest.param("", "session", [], id="empty header"),
        pytest.param("session=abc", "session", ["abc"], id="str, alone"),
        pytest.param("theme=dark; session=abc; lang=en", "session", ["abc"], id="str, among others"),
        pytest.param(b"theme=dark; session=abc", "session", ["abc"], id="bytes"),
        pytest.param(["theme=dark", b"session=abc"], "session", ["abc"], id="list of headers (HTTP/2)"),
        pytest.param((h for h in ["session=abc"]), "session", ["abc"], id="generator of headers"),
        pytest.param(b"x=\xff\xfe; session=abc", "session", ["abc"], id="non-UTF-8 bytes elsewhere"),
        pytest.param(b"session=ab\xe9", "session", ["ab\xe9"], id="non-UTF-8 byte in the value read as Latin-1"),
        pytest.param('session="abc"', "session", ["abc"], id="quoted value"),
        pytest.param('session="', "session", ['"'], id="lone quote kept"),
        pytest.param("session=a; session=b", "session", ["a", "b"], id="duplicates in order"),
        pytest.param(["session=a", "session=b; session=c"], "session", ["a", "b", "c"], id="duplicates across headers"),
        pytest.param("connect:sess=abc; connect=no", "connect:sess", ["abc"], id="name with a colon"),
        pytest.param("xsession=1; session_id=2; session=3", "session", ["3"], id="similar names not matched"),
        pytest.param("  session  =  abc  ;", "session", ["abc"], id="spaces trimmed"),
        pytest.param("session=a=b", "session", ["a=b"], id="equals in the value kept"),
        pytest.param("session=; session", "session", [], id="empty value and bare name skipped"),
        pytest.param("Session=abc", "session", [], id="names are case-sensitive"),
        pytest.param(";;;===;", "session", [], id="garbage"),
    ],
)
def test_cookie_values(headers: Headers, name: str, expected: list[str]) -> None:
    """cookie_values returns every value sent under the name, in header order, and never raises."""
    assert cookie_values(headers, name) == expected


@pytest.mark.parametrize("length", [MAX_VALUE_LENGTH, MAX_VALUE_LENGTH + 1, 5 * MAX_VALUE_LENGTH])
def test_values_over_the_browser_limit_are_still_reported(length: int) -> None:
    """Long values are returned with the others, so the engine can reject and expire them; order is kept."""
    long_value = "v" * length
    values = cookie_values(f"session={long_value}; session=good", "session")
    assert values == [long_value, "good"]
    assert MAX_VALUE_LENGTH == 4096


def test_engine_never_verifies_a_value_over_the_limit() -> None:
    """A value over 4096 characters is a rejected cookie: present, but naming no session."""
    from persession import SessionConfig
    from persession.core import SessionEngine

    engine = SessionEngine(SessionConfig(secret="s"))
    signed = engine.signer.sign(engine.signer.new_id())
    padded = signed + "=" * (MAX_VALUE_LENGTH + 1 - len(signed))
    opening = engine.open(f"session={padded}")
    assert opening.present
    assert opening.sid is None
    assert engine.open(f"session={signed}").sid is not None


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("session=abc; " + "x=" + "y" * 1_000_000, id="one huge cookie"),
        pytest.param("session=abc; " + "a=b; " * 200_000, id="a million bytes of small cookies"),
        pytest.param(b"session=abc; " + b";" * 1_000_000, id="a million separators, bytes"),
        pytest.param(["session=abc", *(["k=v"] * 100_000)], id="a hundred thousand headers"),
    ],
)
def test_megabyte_header_is_handled_quickly(header: Any) -> None:
    """A 1 MB Cookie header neither raises nor takes long, and the early session cookie is still found."""
    start = time.perf_counter()
    values = cookie_values(header, "session")
    assert values == ["abc"]
    assert time.perf_counter() - start < 1.0


def test_cookie_after_the_first_64k_is_not_parsed() -> None:
    """Parsing stops after 64 KiB of headers, so a cookie buried after that is not returned."""
    assert cookie_values("pad=" + "x" * 70_000 + "; session=late", "session") == []


# 2001-09-09T01:46:40Z, a Sunday.
WHEN = 1_000_000_000


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, "s=v; Path=/; HttpOnly; SameSite=Lax", id="defaults"),
        pytest.param(
            {"max_age": 3600, "expires": WHEN},
            "s=v; Path=/; Max-Age=3600; Expires=Sun, 09 Sep 2001 01:46:40 GMT; HttpOnly; SameSite=Lax",
            id="Max-Age with Expires as an HTTP date",
        ),
        pytest.param(
            {"expires": WHEN},
            "s=v; Path=/; Expires=Sun, 09 Sep 2001 01:46:40 GMT; HttpOnly; SameSite=Lax",
            id="Expires alone",
        ),
        pytest.param(
            {"max_age": 0},
            "s=v; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax",
            id="deletion: Max-Age=0 and the 1970 date",
        ),
        pytest.param(
            {"max_age": 0, "expires": WHEN},
            "s=v; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax",
            id="deletion ignores a given expires",
        ),
        pytest.param(
            {"max_age": -30},
            "s=v; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax",
            id="negative Max-Age clamped to 0",
        ),
        pytest.param({"path": "/app"}, "s=v; Path=/app; HttpOnly; SameSite=Lax", id="Path"),
        pytest.param({"path": None}, "s=v; HttpOnly; SameSite=Lax", id="no Path"),
        pytest.param({"domain": "example.com"}, "s=v; Path=/; Domain=example.com; HttpOnly; SameSite=Lax", id="Domain"),
        pytest.param({"secure": True}, "s=v; Path=/; Secure; HttpOnly; SameSite=Lax", id="Secure"),
        pytest.param({"httponly": False}, "s=v; Path=/; SameSite=Lax", id="no HttpOnly"),
        pytest.param({"samesite": "strict"}, "s=v; Path=/; HttpOnly; SameSite=Strict", id="SameSite Strict"),
        pytest.param(
            {"samesite": "none", "secure": True}, "s=v; Path=/; Secure; HttpOnly; SameSite=None", id="SameSite None"
        ),
        pytest.param({"samesite": None}, "s=v; Path=/; HttpOnly", id="no SameSite"),
        pytest.param(
            {"secure": True, "partitioned": True},
            "s=v; Path=/; Secure; HttpOnly; SameSite=Lax; Partitioned",
            id="Partitioned",
        ),
        pytest.param(
            {
                "max_age": 60,
                "expires": WHEN,
                "path": "/p",
                "domain": ".example.org",
                "secure": True,
                "samesite": "none",
                "partitioned": True,
            },
            "s=v; Path=/p; Domain=.example.org; Max-Age=60; Expires=Sun, 09 Sep 2001 01:46:40 GMT;"
            " Secure; HttpOnly; SameSite=None; Partitioned",
            id="every attribute",
        ),
    ],
)
def test_render_set_cookie(kwargs: dict[str, Any], expected: str) -> None:
    """render_set_cookie writes each attribute in RFC 6265 spelling and a fixed order."""
    assert render_set_cookie("s", "v", **kwargs) == expected


def test_positive_max_age_without_expires_has_no_past_expires() -> None:
    """A live cookie given Max-Age but no expiry time does not carry the 1970 deletion date."""
    header = render_set_cookie("s", "v", max_age=3600)
    assert "Max-Age=3600" in header
    assert "1970" not in header


def test_rendered_cookie_parses_back() -> None:
    """The name and value of a rendered Set-Cookie are read back by cookie_values."""
    header = render_set_cookie("connect:sess", "id.sig", max_age=10, expires=WHEN)
    assert cookie_values(header.split(";", 1)[0], "connect:sess") == ["id.sig"]


_ATTRIBUTES = st.fixed_dictionaries(
    {
        "path": st.sampled_from([None, "", "/", "/app"]),
        "domain": st.sampled_from([None, "", ".example.org"]),
        "secure": st.booleans(),
        "httponly": st.booleans(),
        "samesite": st.sampled_from([None, "lax", "strict", "none"]),
        "partitioned": st.booleans(),
    }
)


def _reference_set_cookie(
    name: str, value: str, max_age: int | None, expires: float | None, attributes: dict[str, Any]
) -> str:
    """The header spelled out attribute by attribute, as RFC 6265 orders them: the oracle for CookieFormat."""
    parts = [f"{name}={value}"]
    if attributes["path"]:
        parts.append(f"Path={attributes['path']}")
    if attributes["domain"]:
        parts.append(f"Domain={attributes['domain']}")
    if max_age is not None and max_age <= 0:
        parts += ["Max-Age=0", "Expires=Thu, 01 Jan 1970 00:00:00 GMT"]
    elif max_age is not None:
        parts.append(f"Max-Age={max_age}")
        if expires is not None:
            parts.append(f"Expires={formatdate(expires, usegmt=True)}")
    elif expires is not None:
        parts.append(f"Expires={formatdate(expires, usegmt=True)}")
    for flag, text in (("secure", "Secure"), ("httponly", "HttpOnly")):
        if attributes[flag]:
            parts.append(text)
    if attributes["samesite"]:
        parts.append(f"SameSite={attributes['samesite'].capitalize()}")
    if attributes["partitioned"]:
        parts.append("Partitioned")
    return "; ".join(parts)


@given(
    attributes=_ATTRIBUTES,
    max_age=st.one_of(st.none(), st.integers(-5, 10**9)),
    expires=st.one_of(st.none(), st.floats(0, 4e9)),
)
def test_cookie_format_renders_every_combination_of_attributes(
    attributes: dict[str, Any], max_age: int | None, expires: float | None
) -> None:
    """CookieFormat.live (and so render_set_cookie) spells every attribute combination as the reference does."""
    expected = _reference_set_cookie("sid", "v.sig", max_age, expires, attributes)
    assert CookieFormat("sid", **attributes).live("v.sig", max_age=max_age, expires=expires) == expected
    assert render_set_cookie("sid", "v.sig", max_age=max_age, expires=expires, **attributes) == expected


@given(st.lists(st.floats(0, 4e9), min_size=1, max_size=20))
def test_http_date_is_formatdate_with_its_one_second_cache(stamps: list[float]) -> None:
    """The Expires date equals email.utils.formatdate, also when the cached second is asked again."""
    for stamp in [*stamps, stamps[0], int(stamps[0]) + 0.9995, int(stamps[0]) + 0.25]:
        assert _http_date(stamp) == formatdate(stamp, usegmt=True)


# -- express-session's spelling (compat="express") ------------------------------------------------------


def _reference_express_set_cookie(
    name: str, value: str, max_age: int | None, expires: float | None, attributes: dict[str, Any]
) -> str:
    """The header as the cookie package's serialize() (express-session's) writes it: the oracle for compat="express"."""
    parts = [f"{name}={value}"]
    if attributes["domain"]:
        parts.append(f"Domain={attributes['domain']}")
    if attributes["path"]:
        parts.append(f"Path={attributes['path']}")
    if max_age is not None and max_age <= 0:
        parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    elif expires is not None:
        parts.append(f"Expires={formatdate(expires, usegmt=True)}")
    for flag, text in (("httponly", "HttpOnly"), ("secure", "Secure"), ("partitioned", "Partitioned")):
        if attributes[flag]:
            parts.append(text)
    if attributes["samesite"]:
        parts.append(f"SameSite={attributes['samesite'].capitalize()}")
    return "; ".join(parts)


@given(
    attributes=_ATTRIBUTES,
    max_age=st.one_of(st.none(), st.integers(-5, 10**9)),
    expires=st.floats(0, 4e9),
)
def test_express_spelling_renders_every_combination_as_express_session(
    attributes: dict[str, Any], max_age: int | None, expires: float
) -> None:
    """compat="express": express-session's attribute order, Expires and never Max-Age, for every combination."""
    expected = _reference_express_set_cookie("sid", "v.sig", max_age, expires, attributes)
    rendered = CookieFormat("sid", compat="express", **attributes).live("v.sig", max_age=max_age, expires=expires)
    assert rendered == expected
    assert "Max-Age" not in rendered
    spelled = render_set_cookie("sid", "v.sig", max_age=max_age, expires=expires, compat="express", **attributes)
    assert spelled == expected


def test_express_spelling_without_expires_counts_max_age_from_now() -> None:
    """Given only max_age, the express spelling's Expires is now + max_age (it has no Max-Age to carry it)."""
    before = int(time.time())
    header = render_set_cookie("s", "v", max_age=3600, compat="express")
    assert header.startswith("s=v; Path=/; Expires=")
    stamp = header.split("Expires=", 1)[1].split(";", 1)[0]
    assert stamp in {formatdate(before + 3600 + d, usegmt=True) for d in range(3)}
    assert render_set_cookie("s", "v", compat="express") == "s=v; Path=/; HttpOnly; SameSite=Lax"


def test_an_unknown_compat_is_a_config_error() -> None:
    """CookieFormat refuses a compat it does not know, naming the option."""
    with pytest.raises(ConfigError, match="compat") as raised:
        CookieFormat("s", compat="django")  # type: ignore[arg-type]
    assert raised.value.option == "compat"


def _express_cases() -> list[dict[str, Any]]:
    """Every combination of the options persession and express-session share, live and deleted."""
    cases = []
    for path, domain, secure, httponly, samesite, partitioned, lifetime in itertools.product(
        ["/", "/app"],
        [None, "example.org"],
        [False, True],
        [True, False],
        [None, "lax", "strict", "none"],
        [False, True],
        ["persistent", "browser-session", "deleted"],
    ):
        cases.append(
            {
                "path": path,
                "domain": domain,
                "secure": secure,
                "httponly": httponly,
                "samesite": samesite,
                "partitioned": partitioned,
                "lifetime": lifetime,
            }
        )
    return cases


@pytest.mark.parametrize("install", INSTALLS, ids=[install.id for install in INSTALLS])
def test_express_spelling_is_what_express_session_sends(install: NodeInstall) -> None:
    """For every combination of shared options, the express Set-Cookie equals express-session's, byte for byte.

    Node renders each case with express-session's own Cookie (the one it sets
    the session cookie with; for a deletion, the 1970 date that Express'
    res.clearCookie gives), at the same expiry instant.
    """
    cases = _express_cases()
    expires_ms = (int(time.time()) + 3600) * 1000
    script = f"""
const {{ Cookie }} = require("express-session");
const cases = {json.dumps(cases)};
const out = cases.map((c) => {{
  const cookie = new Cookie({{
    path: c.path, httpOnly: c.httponly, secure: c.secure,
    ...(c.domain ? {{ domain: c.domain }} : {{}}),
    ...(c.samesite ? {{ sameSite: c.samesite }} : {{}}),
    ...(c.partitioned ? {{ partitioned: true }} : {{}}),
    maxAge: c.lifetime === "browser-session" ? null : 3600 * 1000,
  }});
  if (c.lifetime === "persistent") cookie.expires = new Date({expires_ms});
  if (c.lifetime === "deleted") cookie.expires = new Date(1);
  return cookie.serialize("connect.sid", c.lifetime === "deleted" ? "" : "s:id.sig");
}});
console.log(JSON.stringify(out));
"""
    from_node = json.loads(node_eval(script, install))
    for case, expected in zip(cases, from_node, strict=True):
        lifetime = case.pop("lifetime")
        attributes = CookieFormat("connect.sid", compat="express", **case)
        if lifetime == "deleted":
            rendered = attributes.live("", max_age=0, expires=None)
        elif lifetime == "persistent":
            rendered = attributes.live("s%3Aid.sig", max_age=3600, expires=expires_ms / 1000)
        else:
            rendered = attributes.live("s%3Aid.sig", max_age=None, expires=None)
        assert rendered == expected, (case, lifetime)
