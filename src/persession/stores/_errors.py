"""What every store's error translation shares: a context manager turning a driver's errors into persession's."""

from __future__ import annotations

from types import TracebackType


class ErrorMap:
    """Raise the :class:`~persession.StoreError` a driver's error stands for (:meth:`translate` says which).

    A class, not a ``@contextmanager`` generator: one shared instance of a
    subclass costs nothing per use, where a generator context manager builds
    two objects. An error :meth:`translate` does not raise for propagates
    unchanged.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if error is not None:
            self.translate(error)

    def translate(self, error: BaseException) -> None:
        """Raise what ``error`` stands for, from it; return to let it through."""
        raise NotImplementedError  # pragma: no cover - every store's map translates
