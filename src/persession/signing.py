"""Session ids and the signatures that bind them to the cookie.

A session id is 256 random bits (``secrets.token_urlsafe(32)``). The cookie
carries the id and an HMAC-SHA256 signature made with itsdangerous under the
newest secret; every configured secret verifies, so secrets rotate without
logging anyone out. Signature checks are constant-time (``hmac.compare_digest``),
with each secret's derived key computed once rather than on every check.

:class:`ExpressSigner` (``SessionConfig(compat="express")``) makes and reads
express-session's cookies instead: ``s:`` + id + ``.`` + the unpadded standard
base64 of HMAC-SHA256(id) (the ``cookie-signature`` package), URL-encoded as
express-session writes it (``s%3A...``), with 192-bit ids of 32 characters as
``uid-safe(24)`` makes them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote, unquote

from itsdangerous import Signer
from itsdangerous.encoding import base64_encode

__all__ = ["ExpressSigner", "ItsdangerousSigner", "SessionIdSigner", "Unsigned", "express_signature", "new_session_id"]

_SALT = b"persession.session-id"
# A SHA-256 digest as sign() writes it: 43 URL-safe characters, the two unused bits of the last one zero.
_CANONICAL_SIGNATURE = re.compile(rb"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
# What new_session_id() produces: 43 characters of the URL-safe base64 alphabet.
_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")
# What ExpressSigner accepts as an id: uid-safe's 32 base64url characters, or
# another genid()'s ids (UUIDs, longer tokens) within the same safe alphabet:
# no ':' (the Redis layouts' key separator) and no '.' (the signature's).
_EXPRESS_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_EXPRESS_PREFIX = "s:"
# encodeURIComponent's unreserved characters besides letters, digits and "-_.~".
_URI_COMPONENT_SAFE = "!*'()"


def new_session_id() -> str:
    """A new random session id: 256 bits, URL-safe base64, 43 characters."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Unsigned:
    """A verified cookie value."""

    #: The session id the cookie names (never shown by ``repr()``).
    sid: str = field(repr=False)
    #: It was signed by an older secret, so the cookie should be re-issued.
    stale: bool
    #: The value is exactly what ``sign(sid)`` returns now (newest secret,
    #: canonical encoding), so a re-sent cookie may reuse it instead of
    #: signing again. Signers that cannot tell leave it ``False``.
    #:
    #: .. versionadded:: 0.2
    exact: bool = False


class SessionIdSigner(Protocol):
    """**Protocol**: how session ids are made and carried in a cookie value."""

    def new_id(self) -> str:
        """A fresh random session id."""
        ...

    def sign(self, sid: str) -> str:
        """The cookie value for ``sid``, signed by the newest secret."""
        ...

    def unsign(self, value: str) -> Unsigned | None:
        """The id in a cookie value, or ``None`` when no secret verifies it."""
        ...


class ItsdangerousSigner:
    """The default signer: ``<id>.<signature>`` with itsdangerous' HMAC-SHA256.

    :param secrets: secret keys as bytes, **newest first**.
    """

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("at least one secret is required")
        self._signers = tuple(
            Signer(key, salt=_SALT, key_derivation="hmac", digest_method=hashlib.sha256) for key in secrets
        )
        # itsdangerous re-derives the key (one more HMAC) on every sign and unsign: derive each once.
        # The signatures are itsdangerous' own, byte for byte: HMAC-SHA256 under the derived key.
        self._keys = tuple(signer.derive_key() for signer in self._signers)

    def new_id(self) -> str:
        return new_session_id()

    def sign(self, sid: str) -> str:
        value = sid.encode("utf-8")
        return (value + b"." + base64_encode(hmac.digest(self._keys[0], value, "sha256"))).decode("ascii")

    def unsign(self, value: str) -> Unsigned | None:
        # itsdangerous' Signer.unsign, once for every secret: the part before the last "." is
        # the id; the signature after it is decoded as itsdangerous does (padding restored).
        if not value.isascii():
            return None
        body, dot, signature = value.encode("ascii").rpartition(b".")
        if not dot:
            return None
        try:  # itsdangerous' base64_decode, without its layers of Python calls
            given = binascii.a2b_base64(signature.translate(_FROM_URLSAFE) + b"=" * (-len(signature) % 4))
        except binascii.Error:
            return None
        for index, key in enumerate(self._keys):
            if hmac.compare_digest(given, hmac.digest(key, body, "sha256")):
                sid = body.decode("ascii")
                if not _ID.match(sid):
                    return None
                if index:
                    return Unsigned(sid, stale=True)
                # Base64 decoding is lenient (standard-alphabet characters, the unused bits of the
                # last character): only the canonical form is what sign() would write.
                return Unsigned(sid, stale=False, exact=_CANONICAL_SIGNATURE.fullmatch(signature) is not None)
        return None


def express_signature(value: str, key: bytes) -> str:
    """``cookie-signature``'s ``sign(value, key)`` without the value: unpadded standard base64 of HMAC-SHA256."""
    digest = hmac.new(key, value.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii").rstrip("=")


class ExpressSigner:
    """express-session's signed cookie: ``s:<id>.<signature>``, URL-encoded.

    The signature is ``cookie-signature``'s: HMAC-SHA256 of the id under the
    secret, in standard base64 without ``=`` padding. :meth:`sign` returns the
    value URL-encoded as express-session sets it (``encodeURIComponent``:
    ``s%3A<id>.<signature with %2B and %2F>``); :meth:`unsign` accepts it
    encoded or not, as express-session's cookie parser does. Like
    express-session, the first secret signs and every one verifies (a list
    is newest first in both); a cookie verified by an older secret is
    reported stale so the engine re-issues it.

    New ids are 32 characters of URL-safe base64 (192 random bits), the form
    of express-session's ``uid-safe(24)``. Ids that Node made with another
    ``genid`` are accepted when they are 16 to 128 characters of
    ``[A-Za-z0-9_-]``.

    :param secrets: secret keys as bytes, **newest first**.

    .. versionadded:: 0.1
    """

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("at least one secret is required")
        self._keys = tuple(secrets)

    def new_id(self) -> str:
        return secrets.token_urlsafe(24)

    def sign(self, sid: str) -> str:
        signed = f"{_EXPRESS_PREFIX}{sid}.{express_signature(sid, self._keys[0])}"
        return quote(signed, safe=_URI_COMPONENT_SAFE)

    def unsign(self, value: str) -> Unsigned | None:
        if "%" in value:
            try:
                value = unquote(value, errors="strict")
            except UnicodeDecodeError:  # decodeURIComponent would refuse it too
                return None
        if not value.isascii() or not value.startswith(_EXPRESS_PREFIX):
            return None
        sid, dot, signature = value[len(_EXPRESS_PREFIX) :].rpartition(".")
        if not dot or not _EXPRESS_ID.match(sid):
            return None
        for index, key in enumerate(self._keys):
            if hmac.compare_digest(express_signature(sid, key), signature):
                return Unsigned(sid, stale=index > 0)
        return None
