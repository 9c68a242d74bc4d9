"""Driving a store verb of several round trips: a generator that yields what to run and is sent each reply.

In the style of httpx's ``auth_flow``: a layout writes the verb once, as a
flow; these drivers run it on a transport, synchronously or under asyncio.
A verb of one round trip is not a flow (a generator per request costs more
than the verb): its layout gives the op and what finishes it instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

_Op = TypeVar("_Op")
_T = TypeVar("_T")


def drive(run: Callable[[_Op], Any], flow: Generator[_Op, Any, _T]) -> _T:
    """Run ``flow``: each op it yields with ``run``, its reply sent back in; the flow's return value."""
    try:
        op = next(flow)
        while True:
            op = flow.send(run(op))
    except StopIteration as done:
        result: _T = done.value
        return result


async def adrive(run: Callable[[_Op], Awaitable[Any]], flow: Generator[_Op, Any, _T]) -> _T:
    """The asyncio twin of :func:`drive`: ``run`` is awaited."""
    try:
        op = next(flow)
        while True:
            op = flow.send(await run(op))
    except StopIteration as done:
        result: _T = done.value
        return result
