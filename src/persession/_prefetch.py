"""The WSGI shell's opt-in split layer: a store's round trips overlap the framework's work.

Used by :class:`persession.wsgi.SessionMiddleware` when its store offers
:class:`~persession.stores.PrefetchLoad` or :class:`~persession.stores.SplitWrite`
(:class:`~persession.stores.redis.RedisStore` offers both); the plain path
(``persession._wsgi_response``) knows nothing of it.

- **Prefetch**: the load is sent as the request arrives; the session is a
  :class:`DeferredSession` that reads the answer at its first use (or when
  the response starts), so the store works while the framework routes.
- **Split write**: the plan's write is sent at commit and its answer read
  just before the response's first byte: :class:`SplitResponse` holds the
  real ``start_response`` until then, so a failed write still answers 503.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from . import _shell
from ._plan import Opening, Plan
from ._variants import combine
from ._wsgi_response import Response
from .core import SessionEngine
from .exceptions import StoreError
from .session import Session
from .stores.base import PendingLoad, PendingWrite, PrefetchLoad, SplitWrite, Store, run_plan

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed import OptExcInfo

#: The one key of a deferred session's own storage until it is loaded (see DeferredSession).
_NOT_LOADED: Any = object()


class DeferredSession(Session):
    """A session whose load was sent when the request arrived; its answer is read at the first use.

    Every use (and the middleware, when the response starts) calls
    :meth:`ensure_loaded` first, which calls ``loader(session)`` once: the
    loader reads the store's answer and calls :meth:`fill` with what the
    store had, or :meth:`fail` with the store's error, or neither (the cookie
    named no live session: a fresh one starts). A store failure is raised by
    that use and every later one, as for a session whose load failed at once.

    .. versionadded:: 0.3
    """

    __slots__ = ("_error", "_loader")

    def __init__(self, loader: Callable[[DeferredSession], None], **options: Any) -> None:
        super().__init__(**options)
        self._loader: Callable[[DeferredSession], None] | None = loader
        self._error: StoreError | None = None
        # Not empty at the C level: json's C encoder answers "{}" for an empty dict without
        # calling items(), the override that loads. Nothing else reads the dict's own storage
        # past the overrides, and ensure_loaded() replaces it.
        dict.__setitem__(self, _NOT_LOADED, None)

    def ensure_loaded(self) -> None:
        """Read the store's answer now, if not done yet; a failure is raised by the next use, not here."""
        loader = self._loader
        if loader is None:
            return
        self._loader = None
        dict.clear(self)
        loader(self)

    def fill(self, sid: str, restored: tuple[dict[str, Any], float, float], *, refreshed: bool) -> None:
        """What the store had (called by the loader): the session the cookie names, its data and times."""
        data, created, expires = restored
        dict.update(self, data)
        self._id = sid
        self._created = created
        self._expires = expires
        self.refreshed = refreshed

    def fail(self, error: StoreError) -> None:
        """The load failed (called by the loader): every use raises ``error``; nothing is saved."""
        self._error = error

    @property
    def loaded(self) -> bool:
        """The store's answer has been read (the session's first use, or the response, did it)."""
        return self._loader is None

    @property
    def id(self) -> str | None:
        if self._loader is not None:
            self.ensure_loaded()
        return self._id

    @property
    def created(self) -> float | None:
        if self._loader is not None:
            self.ensure_loaded()
        return self._created

    @property
    def expires(self) -> float | None:
        if self._loader is not None:
            self.ensure_loaded()
        return self._expires

    @property
    def failed(self) -> StoreError | None:
        if self._loader is not None:
            self.ensure_loaded()
        return self._error

    def _use(self) -> None:
        if self._loader is not None:
            self.ensure_loaded()
        self.accessed = True
        if self._error is not None:
            raise self._error

    def __repr__(self) -> str:
        return "<Session (not loaded yet)>" if self._loader is not None else super().__repr__()


class Prefetcher:
    """Sends a request's load as it arrives; the session reads the answer at its first use."""

    __slots__ = ("deferred", "engine", "load", "store")

    def __init__(self, engine: SessionEngine, store: PrefetchLoad, load: Callable[[Opening, bool], Session]) -> None:
        self.engine = engine
        self.store = store
        #: The plain load, for what is not prefetched (no cookie, read-only websocket sessions).
        self.load = load
        self.deferred = combine(DeferredSession, engine.session_class)

    def __call__(self, opening: Opening, read_only: bool) -> Session:
        sid = opening.sid
        if sid is None or read_only:
            return self.load(opening, read_only)
        engine = self.engine
        config = engine.config
        refresh = engine.rolling_load()
        try:
            pending = self.store.prefetch(sid, (config.idle_seconds, config.absolute_seconds) if refresh else None)
        except StoreError as error:
            _shell.log_unavailable(error)
            return engine.unavailable(error)
        return self.deferred(partial(self._finish, sid, opening, pending, refresh), user_path=config.user_path)

    def _finish(
        self, sid: str, opening: Opening, pending: PendingLoad, refreshed: bool, session: DeferredSession
    ) -> None:
        try:
            record = pending.result()
        except StoreError as error:
            _shell.log_unavailable(error)
            session.fail(error)
            return
        restored = self.engine.restore(opening, record)
        if restored is not None:  # else a fresh session: a client-chosen id is never adopted
            session.fill(sid, restored, refreshed=refreshed)


def settle(session: Session) -> None:
    """Read a deferred session's answer, if it has one outstanding."""
    if isinstance(session, DeferredSession) and session._loader is not None:
        session.ensure_loaded()


class SplitResponse(Response):
    """A :class:`~persession._wsgi_response.Response` that sends the write and reads its answer later.

    The real ``start_response`` is held until :meth:`confirm` has read the
    store's answer, just before the body's first byte goes out (PEP 3333 lets
    an application call it that late): a failed write can still answer 503.
    """

    __slots__ = ("held", "pending", "real_write", "splitter")

    def __init__(self, splitter: SplitWrite | None, *args: Any) -> None:
        super().__init__(*args)
        self.splitter = splitter
        #: The write sent and not confirmed yet, and the ``start_response`` arguments held for it.
        self.pending: PendingWrite | None = None
        self.held: tuple[str, list[tuple[str, str]], OptExcInfo | None] | None = None
        self.real_write: Callable[[bytes], object] = _discard

    def start(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None
    ) -> Callable[[bytes], object]:
        if self.pending is not None:
            self.held = (status, headers, exc_info)
            return self.send
        return self.real_start_response(status, headers, exc_info)

    def write(self, plan: Plan) -> None:
        if self.splitter is None:
            run_plan(self.store, plan)
        else:
            self.pending = self.splitter.send_plan(plan)

    def confirm(self) -> bool:
        """Read the answer to the write sent, then start the real response; ``False``: it failed (503 instead)."""
        pending = self.pending
        if pending is None:
            return not self.failed
        self.pending = None
        try:
            pending.result()
        except StoreError as error:
            self.refuse(error)
            return False
        assert self.held is not None  # noqa: S101  (held with every pending write)
        status, headers, exc_info = self.held
        self.held = None
        self.real_write = self.real_start_response(status, headers, exc_info)
        return True

    def send(self, data: bytes) -> object:
        """``start_response``'s ``write`` (PEP 3333's imperative output), once the write is confirmed."""
        if self.pending is not None:
            self.confirm()
        return self.real_write(data)

    def ready(self) -> bool:
        if self.pending is not None:
            self.confirm()
        return not self.failed

    @property
    def settled(self) -> bool:
        return self.pending is None

    def abandon(self) -> None:
        settle(self.session)
        pending, self.pending = self.pending, None
        if pending is not None:
            try:
                pending.result()
            except StoreError as error:
                _shell.log_unavailable(error)


def split_response(store: Store) -> Callable[..., Response] | None:
    """How the middleware makes a request's :class:`Response` for ``store``; ``None``: the plain one."""
    if not isinstance(store, (PrefetchLoad, SplitWrite)):
        return None
    splitter = store if isinstance(store, SplitWrite) else None
    return partial(SplitResponse, splitter)


def _discard(_: bytes) -> None:
    return None
