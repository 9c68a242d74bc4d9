"""Security log lines a client cannot multiply.

Every request can carry a forged or stale cookie, so a WARNING per rejected
cookie would let any client add a log line per request. :class:`RejectionLog`
keeps the signal and drops the flood: the first rejection is logged as a
WARNING at once, later ones are counted per reason and reported in one
WARNING line at most every ``interval`` seconds (on the first rejection after
the interval; counts still pending when the log is collected or the process
exits are reported then). Each rejection is also logged at DEBUG, for a
developer who wants every one.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import Counter
from collections.abc import Callable

__all__ = ["INTERVAL", "RejectionLog"]

#: Seconds between two summary lines of one :class:`RejectionLog`.
INTERVAL = 60.0


class _Tally:
    """What a RejectionLog has counted but not reported yet (also reachable by its finalizer)."""

    __slots__ = ("counts", "lock", "logger", "since")

    def __init__(self, logger: logging.Logger, since: float) -> None:
        self.logger = logger
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.since = since

    def take(self, now: float) -> tuple[Counter[str], float]:
        counts, since = self.counts, self.since
        self.counts, self.since = Counter(), now
        return counts, since

    def report(self, counts: Counter[str], seconds: float) -> None:
        total = sum(counts.values())
        if total == 1:
            (reason,) = counts
            self.logger.warning(
                "session cookie rejected: %s (further rejections are summarised at most every %.0f s;"
                " each one is logged at DEBUG)",
                reason,
                INTERVAL,
            )
            return
        detail = ", ".join(f"{count} {reason}" for reason, count in counts.most_common())
        self.logger.warning("%d session cookies rejected in the last %.0f s: %s", total, seconds, detail)

    def flush(self, now: float) -> None:
        with self.lock:
            counts, since = self.take(now)
        if counts:
            self.report(counts, now - since)


class RejectionLog:
    """Logs rejected session cookies on ``logger``: one WARNING per ``interval`` at most, each one at DEBUG.

    :param logger: where the lines go (persession uses ``persession.security``).
    :param interval: seconds between two WARNING lines; default :data:`INTERVAL`.
    :param clock: returns the current time in seconds.
    """

    def __init__(self, logger: logging.Logger, *, interval: float = INTERVAL, clock: Callable[[], float]) -> None:
        self.interval = interval
        self.clock = clock
        self._tally = _Tally(logger, clock())
        self._next = float("-inf")  # the first rejection is reported at once
        weakref.finalize(self, _flush_at_end, self._tally, clock)

    def __call__(self, reason: str) -> None:
        """Count one rejected cookie; ``reason`` names why, never the cookie or the session id."""
        tally = self._tally
        tally.logger.debug("session cookie rejected: %s", reason)
        now = self.clock()
        with tally.lock:
            tally.counts[reason] += 1
            if now < self._next:
                return
            self._next = now + self.interval
            counts, since = tally.take(now)
        tally.report(counts, now - since)

    def flush(self) -> None:
        """Report what was counted since the last line now (nothing when nothing was)."""
        self._tally.flush(self.clock())


def _flush_at_end(tally: _Tally, clock: Callable[[], float]) -> None:
    tally.flush(clock())
