"""PyMongo's errors as persession's, for both flavours."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from bson.errors import BSONError
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError

from ...exceptions import StoreError, StoreUnavailable


@contextlib.contextmanager
def _map_errors() -> Iterator[None]:
    """Translate PyMongo's errors: the one place this module does so (both flavours)."""
    try:
        yield
    except (ConnectionFailure, ExecutionTimeout) as error:
        raise StoreUnavailable(f"MongoDB store unavailable: {error}", error) from error
    except PyMongoError as error:
        if error.timeout:
            raise StoreUnavailable(f"MongoDB store unavailable: {type(error).__name__}", error) from error
        # Server messages can quote the filter (a duplicate key quotes the id): name only the error.
        code = getattr(error, "code", None)
        raise StoreError(f"MongoDB store failed: {type(error).__name__} (code {code})", error) from error
    except BSONError as error:
        raise StoreError(f"MongoDB store failed: {type(error).__name__}: {error}", error) from error
