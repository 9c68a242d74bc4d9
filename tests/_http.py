"""HTTP helpers shared by the shell and server tests: the session cookie a response sets or a client holds."""

from __future__ import annotations

import httpx
from werkzeug.test import Client, TestResponse

__all__ = ["session_cookie"]


def session_cookie(source: httpx.Response | TestResponse | Client) -> str | None:
    """The value of the session cookie ``source`` sets (``""`` when it expires it), or ``None`` when it sets none.

    ``source`` is an httpx response, a werkzeug (or Flask) test response, or
    a werkzeug (or Flask) test client, for which it is the cookie the client
    holds now. A response that sets the cookie twice fails the test.
    """
    if isinstance(source, Client):
        cookie = source.get_cookie("session")
        return None if cookie is None else cookie.value
    headers = (
        source.headers.get_list("set-cookie")
        if isinstance(source, httpx.Response)
        else source.headers.getlist("Set-Cookie")
    )
    found = [header.split(";", 1)[0] for header in headers if header.startswith("session=")]
    assert len(found) <= 1, found
    return found[0].removeprefix("session=") if found else None
