"""``from_url``'s URLs, shared by both flavours: one parse into what a transport is built from."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

from ...exceptions import ConfigError
from .._express import choose_layout
from ._constants import (
    DEFAULT_COLLECTION,
    DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
    DEFAULT_SOCKET_TIMEOUT_MS,
    Layout,
)
from ._layouts import LAYOUTS

_SCHEMES: Final = ("mongodb", "mongodb+srv")
_TIMEOUT_DEFAULTS: Final = {
    "serverSelectionTimeoutMS": DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
    "connectTimeoutMS": DEFAULT_CONNECT_TIMEOUT_MS,
    "socketTimeoutMS": DEFAULT_SOCKET_TIMEOUT_MS,
}


@dataclass(frozen=True)
class MongoTarget:
    """A parsed store URL: what a client is built from, kept so ``to_async()`` can build the twin's."""

    url: str = field(repr=False)  # the URL PyMongo gets (persession's parameters removed): it may hold a password
    database: str
    collection: str
    layout: Layout
    options: dict[str, Any] = field(repr=False)  # the client's keywords: they may hold credentials


def parse_url(
    url: str, database: str | None, collection: str | None, layout: Layout | None, client_kwargs: Mapping[str, Any]
) -> MongoTarget:
    """``url`` and ``from_url``'s keywords as a :class:`MongoTarget`; :class:`ConfigError` if unusable.

    The layout is the keyword, else the URL's ``layout`` parameter, else
    ``"persession"`` (both given and different: an error naming ``layout``);
    the database is ``database``, else the URL's path; the collection is
    ``collection``, else the URL's ``collection`` parameter, else
    :data:`DEFAULT_COLLECTION`. Other errors name ``url``.
    """
    parts = urlsplit(url) if isinstance(url, str) else None
    kept: list[str] = []
    own: dict[str, str] = {}
    for piece in re.split(r"[&;]", parts.query) if parts is not None and parts.query else ():
        name, _, value = piece.partition("=")
        name, value = unquote_plus(name), unquote_plus(value)
        if name == "collection":
            own[name] = value
        elif name == "layout":
            if value:  # the first one given, as parse_qsl reads it
                own.setdefault(name, value)
        else:
            kept.append(piece)
    url_layout = own.get("layout")
    if layout is not None and url_layout is not None and layout != url_layout:
        raise ConfigError("layout", f"the URL says layout={url_layout!r}, the keyword {layout!r}")
    chosen_layout = choose_layout(layout or url_layout or "persession", LAYOUTS)
    if parts is None:
        raise ConfigError("url", f"{url!r} is not a MongoDB URL such as 'mongodb://host/dbname'")
    if parts.scheme.lower() not in _SCHEMES:
        raise ConfigError("url", f"{parts.scheme!r} is not a MongoDB URL scheme; use mongodb:// or mongodb+srv://")
    if not parts.netloc.rpartition("@")[2].strip(","):
        # PyMongo never assumes localhost either, but say so before it does.
        raise ConfigError("url", "the MongoDB URL names no host (a store URL never falls back to localhost)")
    chosen_database = database or (unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path))
    if not chosen_database:
        raise ConfigError("url", "name the database in the URL path ('mongodb://host/dbname') or pass database=")
    driver_url = f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"
    if kept:
        driver_url += "?" + "&".join(kept)
    return MongoTarget(
        driver_url,
        chosen_database,
        collection or own.get("collection") or DEFAULT_COLLECTION,
        chosen_layout,
        _client_options(driver_url, client_kwargs),
    )


def _client_options(driver_url: str, client_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``client_kwargs`` plus the bounded timeouts the URL or the caller did not set themselves."""
    given = {name.lower() for name, _ in parse_qsl(urlsplit(driver_url).query.replace(";", "&"))}
    given.update(name.lower() for name in client_kwargs)
    options = {name: value for name, value in _TIMEOUT_DEFAULTS.items() if name.lower() not in given}
    # Connect on first use, not now: safe to build before a fork (gunicorn --preload), and a
    # mongodb+srv:// lookup happens when the store is used, not at import time.
    options.setdefault("connect", False)
    options.update(client_kwargs)
    return options
