"""Rejected cookies are logged without letting a client flood the log (persession._rejections).

Hostile requests go through the real WSGI middleware on a real SQLite store;
the clock is the middleware's, moved by hand.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from werkzeug.test import Client

from persession._rejections import INTERVAL, RejectionLog
from persession.signing import ItsdangerousSigner
from persession.stores import SqliteStore
from persession.wsgi import SessionMiddleware, get_session

if TYPE_CHECKING:
    from persession.types import StartResponse, WSGIEnvironment

SECRET = "rejections-test-secret-0123456789abcdef"
HOSTILE = 1000


class Clock:
    """Starts at the real time (the SQLite store checks expiry against it) and moves only by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    session = get_session(environ)
    session["visits"] = session.get("visits", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(session["visits"]).encode()]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(tmp_path: Path, clock: Clock) -> Iterator[Client]:
    store = SqliteStore(tmp_path / "s.db")
    yield Client(SessionMiddleware(app, secret=SECRET, store=store, clock=clock), use_cookies=False)
    store.close()  # Python 3.13 warns of a SQLite connection collected open


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "persession.security" and r.levelno >= logging.WARNING]


def hostile_cookies(count: int) -> list[str]:
    """Half forged (signed by another key), half validly signed ids of sessions that do not exist."""
    forger = ItsdangerousSigner([b"attacker-key"])
    ours = ItsdangerousSigner([SECRET.encode()])
    return [(forger if i % 2 else ours).sign(ours.new_id()) for i in range(count)]


def test_a_thousand_hostile_requests_log_one_warning_then_one_summary(
    client: Client, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """1000 bad cookies within the interval: one WARNING at once, 1000 DEBUG lines, the counts in the next WARNING."""
    caplog.set_level(logging.DEBUG, logger="persession")
    cookies = hostile_cookies(HOSTILE)
    for cookie in cookies:
        response = client.get("/", headers={"Cookie": f"session={cookie}"})
        assert response.status_code == 200
        assert response.text == "1"  # a fresh session each time
        clock.now += 0.01  # 1000 requests in 10 s
    assert warnings_of(caplog) == [  # the first cookie is validly signed, for no session
        "session cookie rejected: it names an unknown or expired session (a new one starts)"
        " (further rejections are summarised at most every 60 s; each one is logged at DEBUG)"
    ]
    debug = [r for r in caplog.records if r.name == "persession.security" and r.levelno == logging.DEBUG]
    assert len(debug) == HOSTILE
    text = caplog.text
    assert not [cookie for cookie in cookies if cookie in text]
    assert not [cookie for cookie in cookies if cookie.split(".", 1)[0] in text]  # nor the ids they carry

    caplog.clear()
    clock.now += INTERVAL
    client.get("/", headers={"Cookie": f"session={hostile_cookies(1)[0]}"})
    # The first request's rejection was reported on its own; the other 999, and this one, now.
    assert warnings_of(caplog) == [
        "1000 session cookies rejected in the last 70 s:"
        " 500 no configured secret verifies its signature,"
        " 500 it names an unknown or expired session (a new one starts)"
    ]


def test_within_the_interval_nothing_more_is_warned(
    client: Client, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """After the first WARNING, rejections inside the interval are counted, not warned."""
    caplog.set_level(logging.WARNING, logger="persession.security")
    for cookie in hostile_cookies(50):
        client.get("/", headers={"Cookie": f"session={cookie}"})
        clock.now += 1
    assert len(warnings_of(caplog)) == 1
    clock.now += INTERVAL - 50 - 1  # still inside the interval of the first line
    client.get("/", headers={"Cookie": f"session={hostile_cookies(1)[0]}"})
    assert len(warnings_of(caplog)) == 1
    clock.now += 1  # the interval is over
    client.get("/", headers={"Cookie": f"session={hostile_cookies(1)[0]}"})
    assert warnings_of(caplog)[1].startswith("51 session cookies rejected in the last ")


def test_good_cookies_are_not_counted(client: Client, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """A session used normally logs nothing on persession.security, at any level."""
    caplog.set_level(logging.DEBUG, logger="persession.security")
    first = client.get("/")
    assert first.status_code == 200
    cookie = first.headers["Set-Cookie"].split(";", 1)[0]
    for visits in range(2, 12):
        assert client.get("/", headers={"Cookie": cookie}).text == str(visits)
    assert [r for r in caplog.records if r.name == "persession.security"] == []


def test_pending_counts_are_reported_when_the_log_goes(caplog: pytest.LogCaptureFixture) -> None:
    """Counts not yet reported are logged by flush(), and when the RejectionLog is collected."""
    caplog.set_level(logging.WARNING, logger="test.rejections")
    logger = logging.getLogger("test.rejections")
    clock = Clock()
    rejections = RejectionLog(logger, clock=clock)

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "test.rejections"]

    rejections("first")
    for _ in range(3):
        rejections("second")
    clock.now += 5
    rejections.flush()
    assert lines() == [
        "session cookie rejected: first (further rejections are summarised at most every 60 s;"
        " each one is logged at DEBUG)",
        "3 session cookies rejected in the last 5 s: 3 second",
    ]
    rejections.flush()  # nothing pending: nothing logged
    assert len(lines()) == 2
    rejections("third")
    rejections("third")
    del rejections
    gc.collect()
    assert lines()[2:] == ["2 session cookies rejected in the last 0 s: 2 third"]
