"""The sans-IO session engine shared by the WSGI and ASGI shells.

No I/O and no framework here: the shells read the request, call the store
and write headers; every decision is made by :class:`SessionEngine`. The flow
of one request is::

    opening = engine.open(cookie_headers)                 # which session does the cookie name?
    record = store.load(opening.sid) if opening.sid else None
    session = engine.build(opening, record)              # what the app sees
    ...                                                  # the app runs
    plan = engine.plan(session, opening, status=..., secure_request=...)
    run_plan(store, plan)                                # the only store write
    # then send plan.set_cookie and Vary: Cookie when plan.vary

With ``rolling=True``, a store that implements
:class:`~persession.stores.RollingLoad` loads and refreshes in one round
trip, and the plan then skips the touch::

    if engine.rolling_load(read_only=...) and isinstance(store, RollingLoad):
        record = store.load_touch(opening.sid, config.idle_seconds, config.absolute_seconds)
        session = engine.build(opening, record, refreshed=True)

Like ``werkzeug.sansio``, this module is public for shells and integrations;
its details may change before 1.0.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from ._forwarded import forwarded_value
from ._headers import add_vary_cookie
from ._plan import Action, Opening, Plan
from ._rejections import RejectionLog
from ._variants import FailedSession, combine
from .codecs import COOKIE, express_cookie
from .config import SessionConfig
from .cookies import MAX_VALUE_LENGTH, CookieFormat, cookie_values, render_set_cookie
from .exceptions import ConfigError, SessionTooLarge, StoreError
from .records import Change, Record, dumps, rolled_expiry
from .session import Session
from .signing import ExpressSigner, ItsdangerousSigner, SessionIdSigner

__all__ = ["USER_KEY", "Action", "Opening", "Plan", "SessionEngine", "add_vary_cookie"]

log: logging.Logger = logging.getLogger("persession")
security_log: logging.Logger = logging.getLogger("persession.security")

#: The session key :func:`persession.guard.login` stores the user under by
#: default; a regenerated session that holds it stays in that user's index.
#: With ``SessionConfig(compat="express")`` the user lives at
#: ``session["passport"]["user"]`` instead: the engine follows
#: :attr:`SessionConfig.user_path <persession.SessionConfig.user_path>`.
USER_KEY: Final = "user"


# Documented and pickled as persession.core names (the plain data lives in _plan.py, for the stores).
Action.__module__ = Opening.__module__ = Plan.__module__ = __name__

_NOTHING = Plan()
# Shared (plans and openings are frozen): building a frozen dataclass costs an object.__setattr__ per field.
_VARY = Plan(vary=True)
_NO_COOKIE = Opening()
# Domain separation: the store key is HMAC(store_key_secret, this label), never the secret itself.
_STORE_KEY_LABEL: Final = b"persession.store-key.v1"


def _indexed_user(session: Session, path: tuple[str, ...] = (USER_KEY,)) -> str | None:
    # dict.get: looking for the user must not count as the application reading the session.
    value: object = session
    for key in path:
        if not isinstance(value, dict):
            return None
        value = dict.get(value, key)
    return None if value is None else str(value)


class SessionEngine:
    """Every session decision, free of I/O.

    :param config: the options.
    :param signer: how ids are made and signed; default an
        :class:`~persession.signing.ItsdangerousSigner` on ``config.secrets``,
        or with ``compat="express"`` an :class:`~persession.signing.ExpressSigner`.
    :param clock: returns the current Unix time; injected by tests.
    :param session_class: the class of the sessions built: :class:`~persession.Session`,
        or a subclass declaring ``__slots__ = ()`` (as Flask's integration does).
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        signer: SessionIdSigner | None = None,
        clock: Callable[[], float] = time.time,
        session_class: type[Session] = Session,
    ) -> None:
        self.config: SessionConfig = config
        if not (isinstance(session_class, type) and issubclass(session_class, Session)):
            raise ConfigError("session_class", f"must be a subclass of persession.Session, not {session_class!r}")
        #: What :meth:`build` makes (a :class:`~persession.Session` subclass adding no slots).
        self.session_class: type[Session] = session_class
        combine(FailedSession, session_class)  # refuses a class that cannot be combined, now
        if signer is None:
            express = config.compat == "express"
            signer = ExpressSigner(config.secrets) if express else ItsdangerousSigner(config.secrets)
        self.signer: SessionIdSigner = signer
        #: express mode: the record's ``cookie`` object is express-session's, hidden from the application.
        self.express: bool = config.compat == "express"
        self.clock: Callable[[], float] = clock
        #: Rejected cookies, logged on ``persession.security`` without letting a client flood the log.
        self.rejections: RejectionLog = RejectionLog(security_log, clock=clock)
        self._warned_samesite = False
        secret = config.store_key_secret
        self._store_key: bytes | None = None
        if secret is not None:
            secret = secret.encode("utf-8") if isinstance(secret, str) else secret
            self._store_key = hmac.new(secret, _STORE_KEY_LABEL, hashlib.sha256).digest()
        # The Set-Cookie attributes that never change, rendered once for each Secure setting.
        self._cookie_formats: dict[bool, CookieFormat] = {
            secure: CookieFormat(
                config.cookie_name,
                compat=config.compat,
                path=config.path,
                domain=config.domain,
                secure=secure,
                httponly=config.httponly,
                # Browsers drop SameSite=None and Partitioned cookies without Secure: see plan().
                samesite=None if config.samesite == "none" and not secure else config.samesite,
                partitioned=config.partitioned and secure,
            )
            for secure in (False, True)
        }

    def store_id(self, token: str) -> str:
        """The id the store keeps the session of cookie id ``token`` under.

        ``token`` itself, or with ``store_key_secret`` its keyed hash:
        ``base64url(HMAC-SHA256(k, token))``, 43 characters of
        ``[A-Za-z0-9_-]`` like the ids themselves.
        """
        if self._store_key is None:
            return token
        digest = hmac.new(self._store_key, token.encode("utf-8"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    # -- request start -------------------------------------------------------

    def open(self, cookie_headers: str | bytes | Iterable[str | bytes] | None) -> Opening:
        """Find the session id in the request's ``Cookie`` header(s).

        Of several cookies with our name, the first that verifies wins.
        """
        values = cookie_values(cookie_headers, self.config.cookie_name)
        if not values:
            return _NO_COOKIE
        for value in values:
            if len(value) > MAX_VALUE_LENGTH:
                continue
            unsigned = self.signer.unsign(value)
            if unsigned is not None:
                token = unsigned.sid if self._store_key is not None else None
                signed = (unsigned.sid, value) if unsigned.exact else None
                return Opening(
                    sid=self.store_id(unsigned.sid), present=True, stale=unsigned.stale, token=token, signed=signed
                )
        self.rejections("no configured secret verifies its signature")
        return Opening(present=True)

    def rolling_load(self, *, read_only: bool = False) -> bool:
        """Whether a shell should load with ``load_touch`` (when its store has it) and pass ``refreshed=True``.

        True with ``rolling`` on, except for read-only (websocket) sessions,
        which never write.
        """
        return self.config.rolling and not read_only

    def build(
        self, opening: Opening, record: Record | None, *, read_only: bool = False, refreshed: bool = False
    ) -> Session:
        """The session the application sees, from the loaded record (if any).

        A verified id whose record is missing or expired gives a fresh session:
        a client-chosen id is never adopted.

        :param refreshed: the record comes from ``load_touch``: the store has
            already refreshed its expiry, so :meth:`plan` sends no touch for it.
        """
        restored = self.restore(opening, record)
        if restored is None:
            return self.session_class(read_only=read_only, user_path=self.config.user_path)
        data, created, expires = restored
        return self.session_class(
            data,
            id=opening.sid,
            created=created,
            expires=expires,
            read_only=read_only,
            refreshed=refreshed,
            user_path=self.config.user_path,
        )

    def restore(self, opening: Opening, record: Record | None) -> tuple[dict[str, Any], float, float] | None:
        """What a session of ``opening.sid`` holds: its data and times; ``None``: a fresh session starts.

        ``None`` for no id, or a record missing or expired (logged as a
        rejection when the cookie named one). :meth:`build` makes the session
        from it; a deferred session fills itself with it when it loads.
        """
        if opening.sid is None:
            return None
        if record is None or record.expires <= self.clock():
            self.rejections("it names an unknown or expired session (a new one starts)")
            return None
        data = record.data
        if self.express and COOKIE in data:
            data = {key: value for key, value in data.items() if key != COOKIE}
        return data, record.created, record.expires

    def unavailable(self, error: StoreError) -> Session:
        """The session of a request whose load failed: every use raises ``error``; :meth:`plan` saves nothing."""
        return combine(FailedSession, self.session_class)(error, user_path=self.config.user_path)

    @staticmethod
    def request_is_secure(scheme: str, forwarded_proto: str | None, *, proxy: bool | int) -> bool:
        """Whether the client reached us over TLS (trusting ``X-Forwarded-Proto`` only with ``proxy``).

        ``proxy=True``: the header's leftmost value (express-session's rule);
        an int ``N``: the ``N``-th value from the right, the one the outermost
        trusted proxy wrote; with fewer values the header is ignored.
        """
        if proxy and forwarded_proto:
            value = forwarded_value(forwarded_proto, proxy)
            if value is not None:
                return value.lower() in ("https", "wss")
        return scheme in ("https", "wss")

    # -- request end ---------------------------------------------------------

    @staticmethod
    def unavailable_instead(session: Session, status: int) -> bool:
        """Whether a shell answers 503 instead of the application's ``status``.

        A framework that catches the :class:`~persession.StoreError` a failed
        load raised at the session's use answers its own 500 page (Flask,
        Starlette): the client gets the store's 503 and ``Retry-After``.
        """
        return status == 500 and session.failed is not None and session.accessed

    def plan(self, session: Session, opening: Opening, *, status: int, secure_request: bool) -> Plan:
        """Decide the store action and the cookie at the end of a request.

        This is the one place that decides whether a cookie is sent.

        :raises SessionTooLarge: the session to save is over ``max_size``.
        """
        vary = session.accessed
        if session.failed is not None or session.read_only or status >= 500:
            # No save after a server error (Django skips 500s; we skip every 5xx).
            return _VARY if vary else _NOTHING
        config = self.config
        now = self.clock()
        old = session.id
        # What the cookie of ``old`` carries: the id itself, or with store_key_secret the token
        # the request came with (the store knows the session by its keyed hash only).
        old_token = old if self._store_key is None else (opening.token if opening.sid == old else None)
        cookie_allowed = config.secure is not True or secure_request
        secure_attr = secure_request if config.secure == "auto" else bool(config.secure)
        # Browsers drop SameSite=None and Partitioned cookies without Secure; over
        # plain HTTP (secure="auto") fall back to the browser's default (Lax).
        samesite = config.samesite
        if samesite == "none" and not secure_attr:
            samesite = None
            if not self._warned_samesite:
                self._warned_samesite = True
                log.warning(
                    "samesite='none' needs a Secure cookie: on plain-HTTP requests the session cookie goes without"
                    " SameSite=None (browsers treat it as Lax). Serve over HTTPS, or set proxy=True behind a"
                    " TLS-terminating proxy (logged once per middleware)"
                )
        partitioned = config.partitioned and secure_attr

        def cookie(token: str | None, created: float) -> str | None:
            if not cookie_allowed or token is None:
                return None
            max_age = self._cookie_max_age(now, created)
            signed = opening.signed
            value = signed[1] if signed is not None and signed[0] == token else self.signer.sign(token)
            return self._cookie_formats[secure_attr].live(
                value, max_age=max_age, expires=None if max_age is None else now + max_age
            )

        def expired_cookie() -> str | None:
            if not opening.present:
                return None
            return render_set_cookie(
                config.cookie_name,
                "",
                max_age=0,
                compat=config.compat,
                path=config.path,
                domain=config.domain,
                secure=secure_attr,
                httponly=config.httponly,
                samesite=samesite,
                partitioned=partitioned,
            )

        data_empty = dict.__len__(session) == 0
        # Read once: a subclass (Flask's) may make it a property of its own.
        modified = session._changed()
        if (session.destroyed or (old is not None and modified)) and data_empty:
            if old is None:
                return Plan(set_cookie=expired_cookie(), vary=vary)
            return Plan(Action.DELETE, sid=old, set_cookie=expired_cookie(), vary=vary)

        if old is None or session.destroyed or session.regenerated:
            untouched = not (modified or session.touched or session.regenerated)
            if old is None and (not cookie_allowed or (untouched and not config.save_uninitialized)):
                # No cookie can reach the client (secure=True over HTTP), or nobody used the
                # session: store nothing. An unverifiable or unknown cookie is expired so the
                # client stops sending it.
                return Plan(set_cookie=expired_cookie() if cookie_allowed else None, vary=vary)
            created = now if session.destroyed or session.created is None else session.created
            expires = self._expires(now, created)
            data = dict(session)
            if self.express:
                # express-session answers 500 for a record without its cookie object: always write one.
                data.pop(COOKIE, None)
                cookie_object = express_cookie(
                    max_age=config.max_age_seconds,
                    expires=expires,
                    secure=secure_attr,
                    httponly=config.httponly,
                    path=config.path,
                    domain=config.domain,
                    samesite=samesite,
                    partitioned=partitioned,
                )
                data = {COOKIE: cookie_object, **data}
            record = Record(data, created=created, accessed=now, expires=expires)
            self._check_size(record.data)
            token = self.signer.new_id()
            sid = self.store_id(token)
            replaces = old if (old is not None and old != sid) else None
            return Plan(
                Action.SAVE,
                sid=sid,
                record=record,
                replaces=replaces,
                set_cookie=cookie(token, created),
                vary=vary,
                user=session.logged_in_as
                or (_indexed_user(session, config.user_path) if replaces is not None else None),
            )

        created = session.created if session.created is not None else now
        expires = self._expires(now, created)
        send_cookie = config.rolling or session.touched or opening.stale
        if modified or config.resave:
            if modified:
                self._check_size(session)
            change = session.changes()
            if config.resave:
                change = Change(set=dict(session), deleted=change.deleted, cleared=change.cleared)
            if self.express and (COOKIE in change.set or COOKIE in change.deleted):
                # The cookie object is express-session's: the store keeps it whatever the application did.
                change = Change(
                    set={key: value for key, value in change.set.items() if key != COOKIE},
                    deleted=change.deleted - {COOKIE},
                    cleared=change.cleared,
                )
            send_cookie = send_cookie or (modified and config.max_age_seconds is not None)
            return Plan(
                Action.MERGE,
                sid=old,
                change=change,
                expires=expires,
                set_cookie=cookie(old_token, created) if send_cookie else None,
                vary=vary,
            )
        # Unchanged: refresh the store's expiry only when asked, or when it would
        # move by half the idle timeout, so a read-only request rarely writes;
        # never when the load already refreshed it (a rolling load_touch).
        if session.refreshed:
            set_cookie = cookie(old_token, created) if send_cookie else None
            return Plan(set_cookie=set_cookie, vary=vary) if set_cookie is not None or vary else _NOTHING
        stale_expiry = session.expires is None or expires - session.expires >= config.idle_seconds / 2
        if send_cookie or stale_expiry:
            return Plan(
                Action.TOUCH,
                sid=old,
                expires=expires,
                set_cookie=cookie(old_token, created) if send_cookie else None,
                vary=vary,
            )
        return _VARY if vary else _NOTHING

    def _expires(self, now: float, created: float) -> float:
        return rolled_expiry(now, created, self.config.idle_seconds, self.config.absolute_seconds)

    def _cookie_max_age(self, now: float, created: float) -> int | None:
        max_age = self.config.max_age_seconds
        if max_age is not None and self.config.absolute_seconds is not None:
            max_age = min(max_age, int(created + self.config.absolute_seconds - now))
        return max_age

    def _check_size(self, data: dict[str, object]) -> None:
        # dict.copy: the JSON encoder walks a plain dict in C, a Session through its items() method.
        size = len(dumps(dict.copy(data)).encode("utf-8"))
        if size > self.config.max_size:
            raise SessionTooLarge(size, self.config.max_size)
