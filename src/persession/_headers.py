"""The response headers a plan adds, in the WSGI (``str``) and ASGI (``bytes``) forms.

Sans-IO, shared by the shells: ``Set-Cookie`` when the plan sends a cookie,
and ``Cookie`` merged into the application's ``Vary`` (or a new one) when the
response depends on the session. The rule is :func:`add_vary_cookie`;
``persession.core`` re-exports it.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._plan import Plan


def add_vary_cookie(existing: str | None) -> str:
    """The ``Vary`` header value with ``Cookie`` added, unless already covered."""
    if not existing:
        return "Cookie"
    tokens = {token.strip().lower() for token in existing.split(",")}
    if "cookie" in tokens or "*" in tokens:
        return existing
    return f"{existing}, Cookie"


def wsgi_headers(headers: list[tuple[str, str]], plan: Plan) -> list[tuple[str, str]]:
    """``headers`` with the plan's ``Set-Cookie`` and ``Vary``; the same list when it adds neither."""
    if plan.set_cookie is None and not plan.vary:
        return headers
    headers = list(headers)
    if plan.set_cookie is not None:
        headers.append(("Set-Cookie", plan.set_cookie))
    if plan.vary:
        for index, (name, value) in enumerate(headers):
            if name.lower() == "vary":
                headers[index] = (name, add_vary_cookie(value))
                break
        else:
            headers.append(("Vary", "Cookie"))
    return headers


def asgi_headers(headers: Iterable[tuple[bytes, bytes]], plan: Plan) -> list[tuple[bytes, bytes]] | None:
    """The ``http.response.start`` headers with the plan's; ``None`` when it adds neither."""
    if plan.set_cookie is None and not plan.vary:
        return None
    merged = list(headers)
    if plan.set_cookie is not None:
        merged.append((b"set-cookie", plan.set_cookie.encode("latin-1")))
    if plan.vary:
        for index, (name, value) in enumerate(merged):
            if name.lower() == b"vary":
                merged[index] = (name, add_vary_cookie(value.decode("latin-1")).encode("latin-1"))
                break
        else:
            merged.append((b"vary", b"Cookie"))
    return merged
