"""The WSGI split: a load or write sent now, its answer read later (``PendingLoad``, ``PendingWrite``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from ...exceptions import StoreError
from ._errors import _map_errors
from ._ops import _Op

_T = TypeVar("_T")


class _Sender(Protocol):
    """A transport that splits, or one wrapped in :class:`._transport._AtOnce` (for typing only)."""

    def send(self, op: _Op) -> Any: ...
    def receive(self, op: _Op, sent: Any) -> Any: ...


class _Pending(Generic[_T]):
    """An op sent on a transport, whose answer :meth:`result` reads and ``finish`` turns into the verb's result.

    Sending happens in ``__init__``: a :class:`~persession.StoreError` there
    (the command could not be written) is raised at once. Until the first
    :meth:`result` the transport may hold a connection; the outcome (a value
    or the StoreError) is kept for later calls.
    """

    __slots__ = ("_finish", "_op", "_outcome", "_sender", "_sent")

    def __init__(self, sender: _Sender, op: _Op, finish: Callable[[Any], _T]) -> None:
        with _map_errors:
            self._sent = sender.send(op)
        self._sender: _Sender | None = sender
        self._op = op
        self._finish = finish
        self._outcome: _T | StoreError | None = None

    def result(self) -> _T:
        """The store's answer (see :class:`~persession.stores.PendingLoad` and ``PendingWrite``)."""
        sender = self._sender
        if sender is not None:
            self._sender = None
            try:
                with _map_errors:
                    self._outcome = self._finish(sender.receive(self._op, self._sent))
            except StoreError as error:
                self._outcome = error
        outcome = self._outcome
        if isinstance(outcome, StoreError):
            raise outcome
        return outcome  # type: ignore[return-value]  # set by the first call
