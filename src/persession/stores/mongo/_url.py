"""``from_url``'s URLs, shared by both flavours: the layout, the URL PyMongo gets, the client options."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

from ...exceptions import ConfigError
from ._connect_mongo import _check_layout
from ._constants import (
    DEFAULT_COLLECTION,
    DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
    DEFAULT_SOCKET_TIMEOUT_MS,
    Layout,
)

_SCHEMES: Final = ("mongodb", "mongodb+srv")
#: Query parameters persession reads from a URL and removes before PyMongo sees it.
_OWN_PARAMS: Final = frozenset({"collection", "layout"})
_TIMEOUT_DEFAULTS: Final = {
    "serverSelectionTimeoutMS": DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
    "connectTimeoutMS": DEFAULT_CONNECT_TIMEOUT_MS,
    "socketTimeoutMS": DEFAULT_SOCKET_TIMEOUT_MS,
}


@dataclass(frozen=True)
class _Target:
    """What ``from_url`` builds a store from: kept so ``to_async()`` can build the twin."""

    url: str
    database: str | None
    collection: str | None
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    layout: Layout = "persession"


def _url_layout(url: str, layout: Layout | None) -> Layout:
    """The layout: the ``layout`` keyword, else the URL's ``layout`` query parameter, else ``"persession"``."""
    query = urlsplit(url).query if isinstance(url, str) else ""
    from_url = next((unquote_plus(v) for k, v in parse_qsl(query.replace(";", "&")) if k == "layout"), None)
    if layout is not None and from_url is not None and layout != from_url:
        raise ConfigError("layout", f"the URL says layout={from_url!r}, the keyword {layout!r}")
    return _check_layout(layout or from_url or "persession")


def _split_url(url: str, database: str | None, collection: str | None) -> tuple[str, str, str]:
    """``(url for PyMongo, database, collection)``; :class:`ConfigError` naming ``url`` if unusable."""
    if not isinstance(url, str):
        raise ConfigError("url", f"{url!r} is not a MongoDB URL such as 'mongodb://host/dbname'")
    parts = urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES:
        raise ConfigError("url", f"{parts.scheme!r} is not a MongoDB URL scheme; use mongodb:// or mongodb+srv://")
    if not parts.netloc.rpartition("@")[2].strip(","):
        # PyMongo never assumes localhost either, but say so before it does.
        raise ConfigError("url", "the MongoDB URL names no host (a store URL never falls back to localhost)")
    path_database = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
    kept: list[str] = []
    own: dict[str, str] = {}
    for piece in re.split(r"[&;]", parts.query) if parts.query else ():
        name, _, value = piece.partition("=")
        if unquote_plus(name) in _OWN_PARAMS:
            own[unquote_plus(name)] = unquote_plus(value)
        else:
            kept.append(piece)
    url_collection = own.get("collection")
    chosen_database = database or path_database
    if not chosen_database:
        raise ConfigError("url", "name the database in the URL path ('mongodb://host/dbname') or pass database=")
    chosen_collection = collection or url_collection or DEFAULT_COLLECTION
    driver_url = f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"
    if kept:
        driver_url += "?" + "&".join(kept)
    return driver_url, chosen_database, chosen_collection


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
