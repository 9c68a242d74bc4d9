"""Server-side sessions for every Python web app: WSGI and ASGI middleware,
SQLite, Redis and MongoDB stores, express-session semantics.

The middlewares live in their own modules (``persession.wsgi`` and
``persession.asgi``); stores in ``persession.stores``.
"""

from __future__ import annotations

from .config import SessionConfig as SessionConfig
from .exceptions import ConfigError as ConfigError
from .exceptions import MissingExtra as MissingExtra
from .exceptions import NotSerializable as NotSerializable
from .exceptions import PersessionError as PersessionError
from .exceptions import SessionError as SessionError
from .exceptions import SessionNotAvailable as SessionNotAvailable
from .exceptions import SessionReadOnly as SessionReadOnly
from .exceptions import SessionTooLarge as SessionTooLarge
from .exceptions import StoreError as StoreError
from .exceptions import StoreUnavailable as StoreUnavailable
from .records import Change as Change
from .records import Record as Record
from .records import SessionInfo as SessionInfo
from .session import Session as Session

__version__ = "0.1.0"

__all__ = [
    "Change",
    "ConfigError",
    "MissingExtra",
    "NotSerializable",
    "PersessionError",
    "Record",
    "Session",
    "SessionConfig",
    "SessionError",
    "SessionInfo",
    "SessionNotAvailable",
    "SessionReadOnly",
    "SessionTooLarge",
    "StoreError",
    "StoreUnavailable",
    "__version__",
]
