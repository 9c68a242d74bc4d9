"""Type aliases shared by the shells, the core and the stores.

ASGI aliases follow Starlette's minimal style (no runtime dependency on
Starlette or asgiref); WSGI aliases come from ``_typeshed.wsgi`` and exist only
for type checkers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

__all__ = [
    "JSON",
    "ASGIApp",
    "Message",
    "Receive",
    "SameSite",
    "Scope",
    "Send",
]

#: A JSON value as :func:`json.loads` returns it.
JSON: TypeAlias = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None

#: The ``SameSite`` cookie attribute, in lower case.
SameSite = Literal["lax", "strict", "none"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import (  # noqa: F401  (re-exported for type checkers)
        StartResponse,
        WSGIApplication,
        WSGIEnvironment,
    )
