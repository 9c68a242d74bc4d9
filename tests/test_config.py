"""SessionConfig: every option validated once, at construction."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from persession import ConfigError, SessionConfig
from persession.config import DEFAULT_MAX_AGE

SECRET = "test-secret"

BAD_OPTIONS = [
    # secret
    pytest.param("secret", None, id="secret None"),
    pytest.param("secret", "", id="secret empty str"),
    pytest.param("secret", b"", id="secret empty bytes"),
    pytest.param("secret", [], id="secret empty list"),
    pytest.param("secret", ["good", ""], id="secret list with an empty one"),
    pytest.param("secret", ["good", 42], id="secret list with an int"),
    pytest.param("secret", {"a", "b"}, id="secret set (no order)"),
    pytest.param("secret", {"a": "b"}, id="secret dict"),
    pytest.param("secret", 12345, id="secret int"),
    # cookie_name
    pytest.param("cookie_name", "", id="cookie_name empty"),
    pytest.param("cookie_name", "a;b", id="cookie_name semicolon"),
    pytest.param("cookie_name", "a b", id="cookie_name space"),
    pytest.param("cookie_name", "a=b", id="cookie_name equals"),
    pytest.param("cookie_name", "a,b", id="cookie_name comma"),
    pytest.param("cookie_name", "sé", id="cookie_name non-ASCII"),
    pytest.param("cookie_name", "a\r\nSet-Cookie: x", id="cookie_name header injection"),
    pytest.param("cookie_name", None, id="cookie_name None"),
    pytest.param("cookie_name", b"session", id="cookie_name bytes"),
    # durations
    pytest.param("max_age", 0, id="max_age zero"),
    pytest.param("max_age", -1, id="max_age negative"),
    pytest.param("max_age", 1.5, id="max_age float"),
    pytest.param("max_age", "60", id="max_age str"),
    pytest.param("max_age", True, id="max_age bool"),
    pytest.param("max_age", timedelta(0), id="max_age zero timedelta"),
    pytest.param("max_age", timedelta(milliseconds=500), id="max_age sub-second timedelta"),
    pytest.param("max_age", timedelta(seconds=-5), id="max_age negative timedelta"),
    pytest.param("idle_timeout", 0, id="idle_timeout zero"),
    pytest.param("idle_timeout", -10, id="idle_timeout negative"),
    pytest.param("idle_timeout", "1h", id="idle_timeout str"),
    pytest.param("idle_timeout", False, id="idle_timeout bool"),
    pytest.param("absolute_timeout", 0, id="absolute_timeout zero"),
    pytest.param("absolute_timeout", 2.5, id="absolute_timeout float"),
    pytest.param("absolute_timeout", timedelta(days=-1), id="absolute_timeout negative timedelta"),
    # booleans
    pytest.param("rolling", 1, id="rolling int"),
    pytest.param("rolling", "yes", id="rolling str"),
    pytest.param("resave", None, id="resave None"),
    pytest.param("save_uninitialized", "false", id="save_uninitialized str"),
    pytest.param("proxy", 0, id="proxy zero"),
    pytest.param("proxy", -1, id="proxy negative"),
    pytest.param("proxy", 1.0, id="proxy float"),
    pytest.param("proxy", "1", id="proxy str"),
    pytest.param("proxy", None, id="proxy None"),
    pytest.param("httponly", None, id="httponly None"),
    pytest.param("partitioned", "true", id="partitioned str"),
    # secure
    pytest.param("secure", "yes", id="secure str"),
    pytest.param("secure", "Auto", id="secure capitalised auto"),
    pytest.param("secure", 1, id="secure int"),
    pytest.param("secure", None, id="secure None"),
    # samesite
    pytest.param("samesite", "off", id="samesite unknown"),
    pytest.param("samesite", "", id="samesite empty"),
    pytest.param("samesite", " lax", id="samesite with a space"),
    pytest.param("samesite", True, id="samesite bool"),
    pytest.param("samesite", 1, id="samesite int"),
    pytest.param("samesite", b"lax", id="samesite bytes"),
    # path
    pytest.param("path", "", id="path empty"),
    pytest.param("path", "app", id="path relative"),
    pytest.param("path", "/a;b", id="path semicolon"),
    pytest.param("path", "/a b", id="path space"),
    pytest.param("path", "/é", id="path non-ASCII"),
    pytest.param("path", None, id="path None"),
    # domain
    pytest.param("domain", "", id="domain empty"),
    pytest.param("domain", "example.com;x", id="domain semicolon"),
    pytest.param("domain", "exa mple.com", id="domain space"),
    pytest.param("domain", 42, id="domain int"),
    # max_size
    pytest.param("max_size", 63, id="max_size below 64"),
    pytest.param("max_size", 0, id="max_size zero"),
    pytest.param("max_size", 1024.0, id="max_size float"),
    pytest.param("max_size", True, id="max_size bool"),
    pytest.param("max_size", "1024", id="max_size str"),
]


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS)
def test_bad_value_raises_config_error_naming_the_option(option: str, value: Any) -> None:
    """A bad value for any option raises ConfigError whose .option and message name that option."""
    kwargs: dict[str, Any] = {"secret": SECRET, option: value}
    with pytest.raises(ConfigError) as excinfo:
        SessionConfig(**kwargs)
    assert excinfo.value.option == option
    assert str(excinfo.value).startswith(f"{option}: ")


def test_config_error_is_a_value_error() -> None:
    """ConfigError is also a ValueError, so generic validation handlers catch it."""
    with pytest.raises(ValueError, match="max_age"):
        SessionConfig(secret=SECRET, max_age=-1)


def test_defaults() -> None:
    """A config built from a secret alone has the documented defaults."""
    config = SessionConfig(secret=SECRET)
    assert config.cookie_name == "session"
    assert config.max_age_seconds == DEFAULT_MAX_AGE == 14 * 24 * 3600
    assert config.idle_seconds == DEFAULT_MAX_AGE
    assert config.absolute_seconds is None
    assert (config.rolling, config.resave, config.save_uninitialized, config.proxy) == (False, False, False, False)
    assert (config.path, config.domain, config.secure, config.httponly) == ("/", None, "auto", True)
    assert (config.samesite, config.partitioned, config.max_size) == ("lax", False, 64 * 1024)


def test_config_is_frozen() -> None:
    """Options cannot be changed after validation."""
    config = SessionConfig(secret=SECRET)
    with pytest.raises(AttributeError):
        config.max_age = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        pytest.param("one", (b"one",), id="str"),
        pytest.param(b"one", (b"one",), id="bytes"),
        pytest.param("clé", ("clé".encode(),), id="non-ASCII str as UTF-8"),
        pytest.param(["new", "old"], (b"new", b"old"), id="list keeps newest first"),
        pytest.param(("new", b"mid", "old"), (b"new", b"mid", b"old"), id="tuple of str and bytes"),
    ],
)
def test_secrets_are_normalised_to_bytes_newest_first(secret: Any, expected: tuple[bytes, ...]) -> None:
    """The secret option becomes a tuple of bytes in the order given, the first being the newest."""
    assert SessionConfig(secret=secret).secrets == expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param(60, 60, id="int"),
        pytest.param(timedelta(minutes=2), 120, id="timedelta"),
        pytest.param(timedelta(seconds=90, milliseconds=700), 90, id="timedelta truncated to whole seconds"),
        pytest.param(timedelta(days=30), 30 * 86400, id="timedelta days"),
    ],
)
@pytest.mark.parametrize("option", ["max_age", "idle_timeout", "absolute_timeout"])
def test_durations_accept_int_and_timedelta(option: str, value: int | timedelta, seconds: int) -> None:
    """Every duration option accepts int seconds or a timedelta and is normalised to int seconds."""
    options: dict[str, Any] = {option: value}
    config = SessionConfig(secret=SECRET, **options)
    derived = {"max_age": "max_age_seconds", "idle_timeout": "idle_seconds", "absolute_timeout": "absolute_seconds"}
    assert getattr(config, derived[option]) == seconds
    assert type(getattr(config, derived[option])) is int


@pytest.mark.parametrize(
    ("options", "idle"),
    [
        pytest.param({}, DEFAULT_MAX_AGE, id="default: max_age"),
        pytest.param({"max_age": 600}, 600, id="follows max_age"),
        pytest.param({"max_age": None}, 24 * 3600, id="browser-session cookie: one day"),
        pytest.param({"max_age": None, "idle_timeout": 300}, 300, id="explicit, browser-session cookie"),
        pytest.param({"max_age": 600, "idle_timeout": 60}, 60, id="explicit wins over max_age"),
    ],
)
def test_idle_seconds_defaults(options: dict[str, Any], idle: int) -> None:
    """idle_seconds is idle_timeout when given, else max_age, else one day for browser-session cookies."""
    config = SessionConfig(secret=SECRET, **options)
    assert config.idle_seconds == idle


def test_max_age_none_means_browser_session_cookie() -> None:
    """max_age=None is accepted and leaves max_age_seconds unset."""
    assert SessionConfig(secret=SECRET, max_age=None).max_age_seconds is None


@pytest.mark.parametrize(
    ("options", "option"),
    [
        pytest.param({"samesite": "none", "secure": False}, "samesite", id="samesite none, insecure"),
        pytest.param({"partitioned": True, "secure": False}, "partitioned", id="partitioned, insecure"),
    ],
)
def test_cross_site_attributes_require_secure(options: dict[str, Any], option: str) -> None:
    """SameSite=None and Partitioned with secure=False are refused, since browsers drop such cookies."""
    with pytest.raises(ConfigError) as excinfo:
        SessionConfig(secret=SECRET, **options)
    assert excinfo.value.option == option


@pytest.mark.parametrize("secure", [pytest.param(True, id="secure"), pytest.param("auto", id="auto")])
def test_cross_site_attributes_accepted_when_secure_or_auto(secure: bool | str) -> None:
    """SameSite=None and Partitioned are accepted with secure=True or "auto"."""
    config = SessionConfig(secret=SECRET, samesite="none", partitioned=True, secure=secure)  # type: ignore[arg-type]
    assert (config.samesite, config.partitioned, config.secure) == ("none", True, secure)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("connect.sid", id="express default"),
        pytest.param("myapp:sess", id="colon, connect style"),
        pytest.param("__Host-session", id="__Host- prefix"),
        pytest.param("a!#$%&'*+-.^_`|~z", id="every RFC 6265 token symbol"),
    ],
)
def test_valid_cookie_names_accepted(name: str) -> None:
    """Cookie names made of token characters, plus ':' which browsers accept, are kept as given."""
    assert SessionConfig(secret=SECRET, cookie_name=name).cookie_name == name


@pytest.mark.parametrize(
    ("option", "value"),
    [
        pytest.param("samesite", None, id="samesite None omits the attribute"),
        pytest.param("samesite", "strict", id="samesite strict"),
        pytest.param("secure", False, id="secure False"),
        pytest.param("domain", ".example.com", id="domain with leading dot"),
        pytest.param("path", "/app/v1", id="nested path"),
        pytest.param("max_size", 64, id="max_size minimum"),
        pytest.param("absolute_timeout", None, id="no absolute timeout"),
    ],
)
def test_valid_values_accepted(option: str, value: Any) -> None:
    """Edge values that are valid are stored unchanged."""
    assert getattr(SessionConfig(secret=SECRET, **{option: value}), option) == value


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        pytest.param("Lax", "lax", id="Lax"),
        pytest.param("STRICT", "strict", id="STRICT"),
        pytest.param("None", "none", id="None as a string"),
        pytest.param("sTrIcT", "strict", id="mixed case"),
        pytest.param("lax", "lax", id="already lower case"),
    ],
)
def test_samesite_is_case_insensitive_and_stored_in_lower_case(given: str, stored: str) -> None:
    """samesite accepts any case, as browsers do, and the config holds the lower-case value."""
    config = SessionConfig(secret=SECRET, samesite=given)  # type: ignore[arg-type]
    assert config.samesite == stored
    assert config == SessionConfig(secret=SECRET, samesite=stored)  # type: ignore[arg-type]


def test_samesite_none_in_any_case_still_requires_secure() -> None:
    """samesite="None" (any case) with secure=False is refused like "none"."""
    for given in ("None", "NONE"):
        with pytest.raises(ConfigError) as caught:
            SessionConfig(secret=SECRET, samesite=given, secure=False)  # type: ignore[arg-type]
        assert caught.value.option == "samesite"
        assert "requires secure" in str(caught.value)


@pytest.mark.parametrize("proxy", [True, False, 1, 2, 5])
def test_proxy_takes_a_bool_or_the_number_of_trusted_proxies(proxy: bool | int) -> None:
    assert SessionConfig(secret=SECRET, proxy=proxy).proxy is proxy
