"""PyMongo's errors as persession's, for both flavours: the one place they are translated."""

from __future__ import annotations

from bson.errors import BSONError
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError

from ...exceptions import StoreError, StoreUnavailable
from .._errors import ErrorMap


class _MapErrors(ErrorMap):
    """Translate PyMongo's and BSON's errors: the one place the MongoDB stores do so (both flavours)."""

    __slots__ = ()

    def translate(self, error: BaseException) -> None:
        if isinstance(error, (ConnectionFailure, ExecutionTimeout)):
            raise StoreUnavailable(f"MongoDB store unavailable: {error}", error) from error
        if isinstance(error, PyMongoError):
            if error.timeout:
                raise StoreUnavailable(f"MongoDB store unavailable: {type(error).__name__}", error) from error
            # Server messages can quote the filter (a duplicate key quotes the id): name only the error.
            code = getattr(error, "code", None)
            raise StoreError(f"MongoDB store failed: {type(error).__name__} (code {code})", error) from error
        if isinstance(error, BSONError):
            raise StoreError(f"MongoDB store failed: {type(error).__name__}: {error}", error) from error


_map_errors = _MapErrors()
