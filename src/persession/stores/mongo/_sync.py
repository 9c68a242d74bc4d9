"""The synchronous MongoDB store (WSGI)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pymongo.collection import Collection

from ...exceptions import ConfigError
from ...records import Change, Record, SessionInfo
from .._express import choose_layout
from ._async import AsyncMongoStore
from ._constants import Layout
from ._layouts import LAYOUTS, MongoLayout
from ._transport import MongoTransport
from ._url import parse_url


class MongoStore:
    """A synchronous MongoDB session store (WSGI).

    :param collection: a PyMongo :class:`~pymongo.collection.Collection` the store
        owns the documents of (one collection per application). The store reads
        and writes through it with its own codec options (plain dicts, aware
        UTC dates), and never closes its client.
    :param clock: returns the current Unix time; default :func:`time.time`.

    The TTL index on ``expires`` is created on first use (an existing index on
    ``expires`` is used as it is). ``save(..., replaces=old)`` writes the new
    document and then deletes ``old``: two writes, not a transaction, so a
    crash between them leaves the old session live until it expires (see
    :meth:`save`).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        collection: Collection[Any] | MongoTransport,
        *,
        clock: Callable[[], float] = time.time,
        layout: Layout = "persession",
    ) -> None:
        if not isinstance(collection, (Collection, MongoTransport)):
            raise ConfigError(
                "collection",
                "MongoStore needs a pymongo Collection; for an AsyncMongoClient collection use AsyncMongoStore",
            )
        chosen = choose_layout(layout, LAYOUTS)
        if isinstance(collection, MongoTransport):
            transport = collection
        else:
            transport = MongoTransport(collection, LAYOUTS[chosen].indexes)
        self._transport = transport
        self._layout: MongoLayout = LAYOUTS[chosen](clock, transport.namespace)
        self._clock = clock
        # Bound once: the verbs below are a layout's step and one run, nothing else.
        self._run = transport.run
        self._drive = transport.drive

    @classmethod
    def from_url(
        cls,
        url: str,
        database: str | None = None,
        collection: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        layout: Layout | None = None,
        **client_kwargs: Any,
    ) -> MongoStore:
        """A store on its own :class:`~pymongo.MongoClient`, closed by :meth:`close`.

        :param url: ``mongodb://[user:pass@]host[:port][,host...]/dbname[?options]``
            or ``mongodb+srv://``; the query parameter ``collection`` is
            persession's, the rest go to PyMongo.
        :param database: the database, when the URL path names none (this wins
            over the path when both do).
        :param collection: the collection; default the URL's ``collection``
            parameter, else ``"sessions"``.
        :param clock: returns the current Unix time.
        :param layout: as for the constructor; also the URL's ``layout`` query
            parameter (``mongodb://db/app?layout=connect-mongo``).
        :param client_kwargs: more :class:`~pymongo.MongoClient` options. Unless
            the URL or these set them, ``serverSelectionTimeoutMS``,
            ``connectTimeoutMS`` and ``socketTimeoutMS`` are 2000 (see the
            ``DEFAULT_*_MS`` constants), and ``connect=False``.
        :raises ConfigError: naming ``url``: not a MongoDB URL, no host, no database,
            or options PyMongo refuses.
        """
        target = parse_url(url, database, collection, layout, client_kwargs)
        return cls(MongoTransport.open(target, LAYOUTS[target.layout].indexes), clock=clock, layout=target.layout)

    @property
    def collection(self) -> Collection[dict[str, Any]]:
        """The collection the documents live in."""
        return self._transport.collection

    @property
    def layout(self) -> Layout:
        """How sessions are stored: ``"persession"`` or ``"connect-mongo"``."""
        return self._layout.name

    def load(self, sid: str) -> Record | None:
        op, finish = self._layout.load(sid)
        return finish(self._run(op))

    def load_touch(self, sid: str, idle: float, absolute: float | None) -> Record | None:
        """Load the live record and refresh its expiry: one ``findAndModify`` with a pipeline update.

        The server computes the capped expiry from the stored ``created``
        (MongoDB 4.2+). See :class:`~persession.stores.RollingLoad`.
        """
        return self._drive(self._layout.load_touch(sid, idle, absolute))

    def save(self, sid: str, record: Record, *, replaces: str | None = None) -> None:
        """Write ``record`` whole, then delete ``replaces``.

        Two writes, not a transaction: a transaction needs a replica set and
        costs a third round trip, and the only state a crash between the
        writes can leave is the *old* session still live until it expires —
        with its old data, never the new record's — which is what it was
        before the regenerate began.
        """
        self._drive(self._layout.save(sid, record, replaces))

    def merge(self, sid: str, change: Change, expires: float) -> bool:
        return self._drive(self._layout.merge(sid, change, expires))

    def touch(self, sid: str, expires: float) -> bool:
        return self._drive(self._layout.touch(sid, expires))

    def delete(self, sid: str) -> None:
        op, finish = self._layout.delete(sid)
        finish(self._run(op))

    def index_user(self, user: str, sid: str, expires: float) -> None:
        """Set ``user`` on the live session's document: one ``update`` (see the module docs).

        The ``connect-mongo`` layout keeps no index: this does nothing.
        """
        step = self._layout.index_user(user, sid)
        if step is not None:
            op, finish = step
            finish(self._run(op))

    def user_sessions(self, user: str) -> list[SessionInfo]:
        """The user's live sessions, oldest first: one ``find`` on the ``user`` index.

        :raises ConfigError: the ``connect-mongo`` layout keeps no index.
        """
        op, finish = self._layout.user_sessions(user)
        return finish(self._run(op))

    def revoke_user(self, user: str) -> list[str]:
        """Delete every session of ``user`` (a ``find``, then one ``delete_many``); return the live ids.

        :raises ConfigError: the ``connect-mongo`` layout keeps no index.
        """
        return self._drive(self._layout.revoke_user(user))

    def close(self) -> None:
        """Close the client if :meth:`from_url` created it; a caller's client is left open."""
        self._transport.close()

    def to_async(self) -> AsyncMongoStore:
        """An :class:`AsyncMongoStore` on the same URL, database and collection (its own client).

        :raises ConfigError: this store was not built by :meth:`from_url`.
        """
        return AsyncMongoStore(self._transport.twin(), clock=self._clock, layout=self.layout)
