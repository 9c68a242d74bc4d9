"""One WSGI request's commit point: ``start_response`` wrapped, and the body that follows it.

:class:`Response` is the plain path: when the application calls
``start_response`` it asks the engine for the plan, carries it out on the
store and starts the real response with the plan's headers. The opt-in
split layer (``persession._prefetch``) extends it for stores that send a
write now and read its answer later. :func:`respond` runs the application
around either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from . import _shell
from ._headers import wsgi_headers
from ._plan import Opening, Plan
from .core import SessionEngine
from .exceptions import StoreError
from .session import Session
from .stores.base import Store, run_plan

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class Response:
    """Wraps ``start_response``: the session is committed once, when the response starts.

    ``commit`` may come earlier, through ``environ[COMMIT_KEY]`` (Flask's
    ``save_session``). A store failure or an unsavable session answers 503
    or 500 instead of the application (:meth:`refuse`).
    """

    __slots__ = (
        "body",
        "committed",
        "engine",
        "error",
        "failed",
        "opening",
        "plan",
        "real_start_response",
        "secure",
        "session",
        "started",
        "store",
    )

    def __init__(
        self,
        engine: SessionEngine,
        store: Store,
        session: Session,
        opening: Opening,
        secure: bool,
        start_response: StartResponse,
    ) -> None:
        self.engine = engine
        self.store = store
        self.session = session
        self.opening = opening
        self.secure = secure
        self.real_start_response = start_response
        self.started = False
        #: persession answered instead of the application (503, or 500), with ``body``.
        self.failed = False
        self.body = _shell.UNAVAILABLE_BODY
        #: What :meth:`commit` decided, or the error it met (a StoreError, or an unsavable session).
        self.committed = False
        self.plan: Plan | None = None
        self.error: Exception | None = None

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        if self.failed:
            return discard
        if self.started:  # a second call, with exc_info, replaces the response: commit only once
            return self.start(status, headers, exc_info)
        self.started = True
        code = _shell.status_code(status)
        if self.engine.unavailable_instead(self.session, code):
            # The framework's 500 page for the StoreError the session raised (logged at load).
            self.abandon()
            self.failed = True
            self.real_start_response(_shell.WSGI_UNAVAILABLE_STATUS, list(_shell.UNAVAILABLE_HEADERS))
            return discard
        self.commit(code)
        if self.error is not None:
            self.refuse(self.error)
            return discard
        assert self.plan is not None  # noqa: S101  (commit sets one of the two)
        return self.start(status, wsgi_headers(headers, self.plan), exc_info)

    def start(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None
    ) -> Callable[[bytes], object]:
        """Start the real response (the split layer holds it until its write is confirmed)."""
        return self.real_start_response(status, headers, exc_info)

    def commit(self, status: int) -> None:
        """Decide what the session needs and carry out the store's write, once; errors are kept for :meth:`refuse`."""
        if self.committed:
            return
        self.committed = True
        try:
            plan = self.engine.plan(self.session, self.opening, status=status, secure_request=self.secure)
            self.write(plan)
        except StoreError as error:
            self.error = error
        except _shell.UNSAVABLE as error:
            self.error = error
        else:
            self.plan = plan

    def write(self, plan: Plan) -> None:
        """The plan's store write (the split layer sends it and reads the answer later)."""
        run_plan(self.store, plan)

    def ready(self) -> bool:
        """Before a chunk of the body goes out: whether the application's response still stands."""
        return not self.failed

    @property
    def settled(self) -> bool:
        """Nothing is owed by the store: the application's iterable may go to the server as it is."""
        return True

    def abandon(self) -> None:
        """The response will not be sent as started: settle what the store still owes."""

    def refuse(self, error: Exception) -> list[bytes]:
        """Answer 503 (a store error) or 500 (an unsavable session) instead of the application, once."""
        if not self.failed:
            self.failed = True
            self.body = _shell.start_refusal(error, self.real_start_response)
        return [self.body]


def respond(app: WSGIApplication, environ: WSGIEnvironment, response: Response) -> Iterable[bytes]:
    """Run the application with ``response.start_response``; what goes back to the server."""
    try:
        result = app(environ, response.start_response)
    except StoreError as error:
        response.abandon()
        if response.started and not response.failed:
            raise
        return response.refuse(error)
    except BaseException:
        response.abandon()  # a prefetched load or a sent write gives its connection back
        raise
    if response.failed:
        close(result)
        return [response.body]
    if response.started and response.settled:
        return result
    # start_response not called yet (it comes with a generator's first chunk), or a write is on
    # its way (its answer is read before the first byte goes out).
    return Body(result, response)


class Body:
    """The application's iterable, when the real ``start_response`` comes with its first chunk."""

    __slots__ = ("response", "result")

    def __init__(self, result: Iterable[bytes], response: Response) -> None:
        self.result = result
        self.response = response

    def __iter__(self) -> Iterator[bytes]:
        response = self.response
        try:
            for chunk in self.result:
                if not response.ready():
                    break
                yield chunk
            response.ready()  # an empty body: a sent write is confirmed all the same
        except StoreError as error:
            response.abandon()
            if response.started and not response.failed:
                raise
            response.refuse(error)
        if response.failed:
            yield response.body

    def close(self) -> None:
        try:
            close(self.result)
        finally:
            self.response.abandon()  # never sent: a prefetched load or a sent write gives its connection back


def close(result: Iterable[bytes]) -> None:
    """PEP 3333: call the iterable's ``close`` if it has one."""
    method = getattr(result, "close", None)
    if method is not None:
        method()


def discard(_: bytes) -> None:
    """The ``write`` of a response persession answered instead."""
    return None
