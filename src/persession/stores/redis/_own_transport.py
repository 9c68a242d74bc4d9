"""Steps as commands on persession's own connections (stores built from a redis://, rediss:// or unix:// URL)."""

from __future__ import annotations

from typing import Any

from ._ops import _Arg, _Step
from ._own import ReplyError, error_reply


def _command(step: _Step, *, cached: bool) -> tuple[_Arg, ...]:
    if step.script is None:
        return ("DEL", *step.keys)
    if cached:
        return ("EVALSHA", step.script.sha, len(step.keys), *step.keys, *step.args)
    return ("EVAL", step.script.text, len(step.keys), *step.keys, *step.args)


def _is_noscript(reply: Any) -> bool:
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


def _raise_errors(replies: list[Any], tolerant: bool) -> list[Any]:
    """Error replies raised (the first one) or, with ``tolerant``, given their class (:func:`._own.error_reply`)."""
    for index, reply in enumerate(replies):
        if isinstance(reply, ReplyError):
            error = error_reply(str(reply))
            if not tolerant:
                raise error
            replies[index] = error
    return replies
