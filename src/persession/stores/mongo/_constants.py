"""What both MongoDB flavours share: the loggers, ``from_url``'s defaults, the layouts, the codec options."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Final, Literal, TypeAlias

from bson.codec_options import CodecOptions

log: logging.Logger = logging.getLogger("persession")
security_log: logging.Logger = logging.getLogger("persession.security")

#: The collection ``from_url`` uses when neither the URL nor the caller names one.
DEFAULT_COLLECTION: Final = "sessions"
#: ``from_url`` default: milliseconds to find a usable server before
#: :class:`~persession.StoreUnavailable` (PyMongo's own default is 30 s).
DEFAULT_SERVER_SELECTION_TIMEOUT_MS: Final = 2000
#: ``from_url`` default: milliseconds to open a connection (PyMongo: 20 s).
DEFAULT_CONNECT_TIMEOUT_MS: Final = 2000
#: ``from_url`` default: milliseconds to wait for a reply on an open
#: connection (PyMongo: no limit). Session reads and writes are small.
DEFAULT_SOCKET_TIMEOUT_MS: Final = 2000

#: How sessions are stored: persession's documents, or connect-mongo's.
Layout: TypeAlias = Literal["persession", "connect-mongo"]
#: Times a connect-mongo ``merge`` or ``touch`` re-reads and retries when another write changed the session.
CAS_ATTEMPTS: Final = 10
#: Longest pause, in seconds, between two of those attempts (jittered, doubling from 2 ms).
CAS_BACKOFF_MAX: Final = 0.05
# Decode to plain dicts and aware UTC datetimes whatever the caller's client uses.
_CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(document_class=dict, tz_aware=True, tzinfo=timezone.utc)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
# MongoDB's codes for "an index on these keys exists with another name or options".
_INDEX_CONFLICTS: Final = frozenset({85, 86})
