"""Session ids and their signatures in the cookie."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

import pytest

from persession.signing import ExpressSigner, ItsdangerousSigner, Unsigned, express_signature, new_session_id

URL_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")
NEW = b"new-secret"
OLD = b"old-secret"
SID = "A" * 20 + "b_-9" + "Z" * 19


def test_ids_are_43_url_safe_characters() -> None:
    """A new session id is 43 characters of the URL-safe base64 alphabet (256 random bits)."""
    for _ in range(100):
        assert URL_SAFE_ID.match(new_session_id())
    assert URL_SAFE_ID.match(ItsdangerousSigner([NEW]).new_id())


def test_ids_are_unique() -> None:
    """Ten thousand ids drawn in a row are all different."""
    ids = {new_session_id() for _ in range(10_000)}
    assert len(ids) == 10_000


def test_sign_unsign_round_trip() -> None:
    """A value signed by the signer unsigns to the same id, not stale."""
    signer = ItsdangerousSigner([NEW])
    sid = signer.new_id()
    value = signer.sign(sid)
    assert value.startswith(sid + ".")
    assert value.isascii()
    assert signer.unsign(value) == Unsigned(sid, stale=False, exact=True)


def test_only_the_canonical_spelling_of_a_signature_is_exact() -> None:
    """A signature whose last character carries a nonzero unused bit verifies, but is not what sign() writes."""
    signer = ItsdangerousSigner([NEW])
    value = signer.sign(SID)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    lenient = value[:-1] + alphabet[alphabet.index(value[-1]) + 1]
    assert signer.unsign(lenient) == Unsigned(SID, stale=False, exact=False)
    # The standard alphabet's "+" and "/" decode too: find an id whose signature has a "-" or "_".
    sid = next(sid for sid in (f"{SID[:-3]}{n:03d}" for n in range(1000)) if set("-_") & set(signer.sign(sid)[44:]))
    body, _, signature = signer.sign(sid).rpartition(".")
    standard = f"{body}.{signature.replace('-', '+').replace('_', '/')}"
    assert signer.unsign(standard) == Unsigned(sid, stale=False, exact=False)


def test_signing_is_deterministic_per_secret() -> None:
    """The same id signs to the same value under one secret and to different values under two."""
    assert ItsdangerousSigner([NEW]).sign(SID) == ItsdangerousSigner([NEW]).sign(SID)
    assert ItsdangerousSigner([NEW]).sign(SID) != ItsdangerousSigner([OLD]).sign(SID)


def _flip(char: str) -> str:
    return "B" if char == "A" else "A"


def _tamper_signature(value: str) -> str:
    # Change the signature's first character: its last one may only carry base64 padding bits.
    sid, _, sig = value.rpartition(".")
    return f"{sid}.{_flip(sig[0])}{sig[1:]}"


def _tamper_id(value: str) -> str:
    sid, _, sig = value.rpartition(".")
    return f"{_flip(sid[0])}{sid[1:]}.{sig}"


BAD_VALUES = [
    pytest.param(_tamper_signature, id="tampered signature"),
    pytest.param(_tamper_id, id="tampered id"),
    pytest.param(lambda v: v[:-1], id="truncated by one"),
    pytest.param(lambda v: v[:-10], id="truncated by ten"),
    pytest.param(lambda v: v.rpartition(".")[0] + ".", id="empty signature"),
    pytest.param(lambda v: v.rpartition(".")[0], id="id alone, no '.'"),
    pytest.param(lambda v: v.replace(".", ""), id="'.' removed"),
    pytest.param(lambda v: v + "x", id="extra character"),
    pytest.param(lambda v: v[:-1] + "é", id="non-ASCII"),
    pytest.param(lambda v: "é" + v, id="non-ASCII prefix"),
    pytest.param(lambda v: v.rpartition(".")[0] + ".!!!!", id="signature not base64"),
    pytest.param(lambda v: "", id="empty"),
    pytest.param(lambda v: ".", id="just a dot"),
    pytest.param(lambda v: "s:" + v, id="express prefix"),
]


@pytest.mark.parametrize("spoil", BAD_VALUES)
def test_bad_values_do_not_verify(spoil: Callable[[str], str]) -> None:
    """A tampered, truncated, non-ASCII or malformed cookie value unsigns to None, never raising."""
    signer = ItsdangerousSigner([NEW])
    value = signer.sign(SID)
    assert signer.unsign(value) is not None
    assert signer.unsign(spoil(value)) is None


def test_wrong_secret_does_not_verify() -> None:
    """A value signed under a secret the signer does not hold unsigns to None."""
    value = ItsdangerousSigner([b"someone-else"]).sign(SID)
    assert ItsdangerousSigner([NEW, OLD]).unsign(value) is None


@pytest.mark.parametrize(
    "sid",
    [
        pytest.param("short", id="too short"),
        pytest.param("A" * 44, id="too long"),
        pytest.param("A" * 42 + "=", id="padding character"),
        pytest.param("A" * 42 + "+", id="standard base64 character"),
        pytest.param("A" * 21 + "." + "A" * 21, id="a dot inside"),
        pytest.param("", id="empty"),
    ],
)
@pytest.mark.parametrize("secrets", [pytest.param([NEW], id="newest"), pytest.param([NEW, OLD], id="rotation")])
def test_valid_signature_over_a_malformed_id_is_refused(sid: str, secrets: list[bytes]) -> None:
    """A correctly signed value whose id is not the 43-character URL-safe form unsigns to None."""
    value = ItsdangerousSigner([secrets[-1]]).sign(sid)
    assert ItsdangerousSigner(secrets).unsign(value) is None


def test_rotation_old_secret_verifies_as_stale() -> None:
    """After rotation a value signed under the old secret verifies with stale=True, the newest with stale=False."""
    rotated = ItsdangerousSigner([NEW, OLD])
    from_before = ItsdangerousSigner([OLD]).sign(SID)
    assert rotated.unsign(from_before) == Unsigned(SID, stale=True)
    assert rotated.unsign(rotated.sign(SID)) == Unsigned(SID, stale=False, exact=True)


def test_rotation_signs_with_the_newest_secret() -> None:
    """A rotated signer signs with the first (newest) secret, which the old secret alone cannot verify."""
    value = ItsdangerousSigner([NEW, OLD]).sign(SID)
    assert value == ItsdangerousSigner([NEW]).sign(SID)
    assert ItsdangerousSigner([OLD]).unsign(value) is None


def test_any_older_secret_in_the_list_verifies() -> None:
    """Every secret in the list verifies, however far down it is."""
    value = ItsdangerousSigner([b"oldest"]).sign(SID)
    assert ItsdangerousSigner([NEW, OLD, b"oldest"]).unsign(value) == Unsigned(SID, stale=True)


def test_signer_needs_a_secret() -> None:
    """A signer without any secret cannot be built."""
    with pytest.raises(ValueError, match="at least one secret"):
        ItsdangerousSigner([])


# -- ExpressSigner: express-session's cookie -----------------------------------------------------------

# Known vectors, produced once with Node's cookie-signature 1.0.7 (express-session 1.18.0's) from tests/node:
#   node -e 'const sig = require("cookie-signature");
#            console.log(encodeURIComponent("s:" + sig.sign(ID, SECRET)))'
# for each (ID, SECRET) below; the third column is what it printed.
EXPRESS_VECTORS = [
    (
        "abcdefghijklmnopqrstuvwxyz012345",
        "keyboard cat",
        "s%3Aabcdefghijklmnopqrstuvwxyz012345.2T3g1YIBqofc0ViEUEt59cUq%2Ba6Wlfi59xfb4RQsxSQ",
    ),
    (
        "nkC-3k0DnB2Yj2Oz6QvjVC2gVGq0Tp4I",
        "new-secret",
        "s%3AnkC-3k0DnB2Yj2Oz6QvjVC2gVGq0Tp4I.AnYBbVk78hWYxUM%2FctPlBAfhmxUi8UbkvuHp8KOtoA8",
    ),
    (
        "nkC-3k0DnB2Yj2Oz6QvjVC2gVGq0Tp4I",
        "old-secret",
        "s%3AnkC-3k0DnB2Yj2Oz6QvjVC2gVGq0Tp4I.K1tjKPIrtOFYB9fAEx%2FnWumE%2FDk4WV4lTEvjCYC73PM",
    ),
    (
        "0123456789abcdef0123456789abcdef",
        "s3cr\u00e9t",
        "s%3A0123456789abcdef0123456789abcdef.yBTXxcU7bWU9uoXeo9WIncF50CE4tRefp5UL1IZ1aqg",
    ),
]


@pytest.mark.parametrize(("sid", "secret", "cookie"), EXPRESS_VECTORS)
def test_express_signer_matches_node_cookie_signature(sid: str, secret: str, cookie: str) -> None:
    """ExpressSigner signs an id exactly as express-session does (vectors computed with Node)."""
    assert ExpressSigner([secret.encode()]).sign(sid) == cookie


@pytest.mark.parametrize(("sid", "secret", "cookie"), EXPRESS_VECTORS)
def test_express_signer_verifies_node_cookies_encoded_or_not(sid: str, secret: str, cookie: str) -> None:
    """A cookie express-session set verifies, URL-encoded as sent or already decoded."""
    signer = ExpressSigner([secret.encode()])
    assert signer.unsign(cookie) == Unsigned(sid, stale=False)
    assert signer.unsign(unquote(cookie)) == Unsigned(sid, stale=False)


def test_express_signer_rotation_is_newest_first() -> None:
    """With [new, old] the new secret signs, and a cookie of the old one verifies as stale."""
    _, _, new_cookie = EXPRESS_VECTORS[1]
    sid, _, old_cookie = EXPRESS_VECTORS[2]
    signer = ExpressSigner([b"new-secret", b"old-secret"])
    assert signer.sign(sid) == new_cookie
    assert signer.unsign(old_cookie) == Unsigned(sid, stale=True)
    assert signer.unsign(new_cookie) == Unsigned(sid, stale=False)
    assert ExpressSigner([b"new-secret"]).unsign(old_cookie) is None


def test_express_ids_are_32_url_safe_characters_like_uid_safe() -> None:
    """New express ids are 32 characters of base64url, as uid-safe(24) makes them, and all differ."""
    signer = ExpressSigner([NEW])
    ids = {signer.new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", sid) for sid in ids)


EXPRESS_BAD = [
    pytest.param(lambda v: v.replace("s%3A", ""), id="no s: prefix"),
    pytest.param(lambda v: v.replace("s%3A", "t%3A"), id="other prefix"),
    pytest.param(lambda v: v[:-1], id="truncated"),
    pytest.param(lambda v: v + "A", id="extra character"),
    pytest.param(lambda v: v + "=", id="padding added"),
    pytest.param(lambda v: v.replace(".", "", 1), id="no dot"),
    pytest.param(lambda v: v.replace("abc", "abd"), id="tampered id"),
    pytest.param(lambda v: v + "%FF", id="not UTF-8 once decoded"),
    pytest.param(lambda v: v + "é", id="non-ASCII"),
    pytest.param(lambda v: "s%3A" + "a" * 8 + "." + v.rpartition(".")[2], id="id too short"),
    pytest.param(lambda v: "", id="empty"),
    pytest.param(lambda v: ItsdangerousSigner([b"keyboard cat"]).sign("A" * 43), id="itsdangerous cookie"),
]


@pytest.mark.parametrize("spoil", EXPRESS_BAD)
def test_express_signer_refuses_bad_values(spoil: Callable[[str], str]) -> None:
    """A tampered, truncated, mis-prefixed, undecodable or foreign cookie unsigns to None, never raising."""
    _, secret, cookie = EXPRESS_VECTORS[0]
    signer = ExpressSigner([secret.encode()])
    assert signer.unsign(cookie) is not None
    assert signer.unsign(spoil(cookie)) is None


def test_express_signer_refuses_signed_ids_with_a_colon_or_a_dot() -> None:
    """A correctly signed id holding ':' or '.' (which would break store keys or the signature) is refused."""
    signer = ExpressSigner([NEW])
    for sid in ("abcdefghijklmnop:qrstuvwxyz01234", "abcdefghijklmnop.qrstuvwxyz01234"):
        value = f"s:{sid}.{express_signature(sid, NEW)}"
        assert signer.unsign(value) is None


def test_express_signer_needs_a_secret() -> None:
    """An express signer without any secret cannot be built."""
    with pytest.raises(ValueError, match="at least one secret"):
        ExpressSigner([])
