"""Which value of an ``X-Forwarded-*`` header to believe: the one rule the session middleware and the guard share."""

from __future__ import annotations

from .exceptions import ConfigError


def check_trust(option: str, trust: object) -> None:
    """Raise :class:`~persession.ConfigError` naming ``option`` unless ``trust`` is a bool or an int >= 1."""
    if not isinstance(trust, int) or (not isinstance(trust, bool) and trust < 1):
        raise ConfigError(option, f"must be True, False or the number of trusted proxies (an int >= 1), not {trust!r}")


def forwarded_value(header: str | None, trust: bool | int) -> str | None:
    """The value of a comma-separated ``X-Forwarded-*`` header to believe, stripped; ``None``: believe none.

    ``trust=False``: none. ``True``: the leftmost, as express's ``trust proxy:
    true``, which a client can write when a proxy appends to the header. An
    int ``N``: the ``N``-th from the right, the one the outermost of the ``N``
    trusted proxies wrote, as Werkzeug's ``ProxyFix``; with fewer values, none.
    """
    if not trust or not header:
        return None
    if trust is True:
        return header.split(",", 1)[0].strip()
    values = header.split(",")
    if len(values) < trust:  # not written by the proxies we trust
        return None
    return values[-trust].strip()
