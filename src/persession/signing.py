"""Session ids and the signatures that bind them to the cookie.

A session id is 256 random bits (``secrets.token_urlsafe(32)``). The cookie
carries the id and an HMAC-SHA256 signature made with itsdangerous under the
newest secret; every configured secret verifies, so secrets rotate without
logging anyone out. Signature checks are constant-time (``hmac.compare_digest``
inside itsdangerous).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from itsdangerous import BadSignature, Signer

__all__ = ["ItsdangerousSigner", "SessionIdSigner", "Unsigned", "new_session_id"]

_SALT = b"persession.session-id"
# What new_session_id() produces: 43 characters of the URL-safe base64 alphabet.
_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")


def new_session_id() -> str:
    """A new random session id: 256 bits, URL-safe base64, 43 characters."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Unsigned:
    """A verified cookie value."""

    #: The session id the cookie names.
    sid: str
    #: It was signed by an older secret, so the cookie should be re-issued.
    stale: bool


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

    def new_id(self) -> str:
        return new_session_id()

    def sign(self, sid: str) -> str:
        return self._signers[0].sign(sid).decode("ascii")

    def unsign(self, value: str) -> Unsigned | None:
        if not value.isascii():
            return None
        for index, signer in enumerate(self._signers):
            try:
                sid = signer.unsign(value).decode("ascii")
            except BadSignature:
                continue
            if not _ID.match(sid):
                return None
            return Unsigned(sid, stale=index > 0)
        return None
