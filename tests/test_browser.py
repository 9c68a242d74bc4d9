"""Both examples in a real headless Chromium: the login form, the counter, the chat websocket and the guard.

Each example runs its README's serve command (uvicorn for Starlette, gunicorn with threads for Flask) on
a SQLite file in tmp_path. Selenium drives Debian's ``chromium`` through Debian's
``chromedriver`` (never a browser that a test tool downloads). What the page's JavaScript saw is read from
its state (``window.chatState``, or a probe's result); the HTTP status of a refused handshake, which page
scripts cannot see, from Chromium's console ("Unexpected response code: 401").

Set PERSESSION_SCREENSHOTS to a directory to keep the logged-in pages' screenshots there
(``python docs/screenshots.py`` does, for the documentation).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from _examples import EXAMPLES, example_server, sqlite_env
from _servers import ServerProcess, free_port, require_binary

pytestmark = [pytest.mark.server, pytest.mark.browser]

INSTALL_HINT = "install Debian's headless browser: apt-get install chromium chromium-driver"
TIMEOUT = 20.0
#: What a browser-side close code of an abnormal closure (a refused handshake) is.
ABNORMAL_CLOSURE = 1006
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--window-size=900,720",
]
# Opens a websocket from the current page and reports what the page could see of it.
PROBE = """
const [url, done] = arguments;
const result = {opened: false, error: false, code: null, greeting: null};
const ws = new WebSocket(url);
ws.onopen = () => { result.opened = true; };
ws.onmessage = (event) => { result.greeting = JSON.parse(event.data); ws.close(1000); };
ws.onerror = () => { result.error = true; };
ws.onclose = (event) => { result.code = event.code; done(result); };
"""
# The page another origin serves: it tries the app's websocket with the browser's cookies.
FOREIGN_PAGE = """<!doctype html><meta charset="utf-8"><title>another origin</title>
<script>
window.result = null;
const ws = new WebSocket(new URLSearchParams(location.search).get("target"));
const result = {opened: false, error: false, code: null};
ws.onopen = () => { result.opened = true; ws.close(1000); };
ws.onerror = () => { result.error = true; };
ws.onclose = (event) => { result.code = event.code; window.result = result; };
</script>"""
T = TypeVar("T")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a fresh profile (no cookies), through Debian's chromedriver; quit after the test."""
    chromium = require_binary("chromium", INSTALL_HINT)
    chromedriver = require_binary("chromedriver", INSTALL_HINT)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.set_script_timeout(TIMEOUT)
        yield driver
    finally:
        driver.quit()


@pytest.fixture(params=EXAMPLES)
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """The example, served by its README command on a SQLite file in tmp_path."""
    with example_server(request.param, sqlite_env(tmp_path / "sessions.db")) as server:
        yield server


def wait_for(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], T], what: str) -> T:
    """Poll ``condition`` until it is truthy (at most TIMEOUT seconds)."""
    result: T = WebDriverWait(driver, TIMEOUT, poll_frequency=0.05).until(condition, f"timed out waiting for {what}")
    return result


def chat_state(driver: webdriver.Chrome) -> dict[str, Any]:
    state: dict[str, Any] = driver.execute_script("return window.chatState")
    return state


def log_in_with_the_form(driver: webdriver.Chrome, app: ServerProcess, user: str) -> None:
    driver.get(app.url + "/")
    field = driver.find_element(By.NAME, "user")
    field.send_keys(user)
    field.submit()
    wait_for(driver, lambda d: d.find_elements(By.ID, "user"), "the logged-in page")
    assert driver.find_element(By.ID, "user").text == user


def counter(driver: webdriver.Chrome) -> int:
    return int(driver.find_element(By.ID, "counter").text)


def probe(driver: webdriver.Chrome, url: str) -> dict[str, Any]:
    """Open a websocket to ``url`` from the current page; what the page saw (opened, error, close code)."""
    result: dict[str, Any] = driver.execute_async_script(PROBE, url)
    return result


def logged_statuses(driver: webdriver.Chrome) -> list[int]:
    """The HTTP statuses of refused websocket handshakes Chromium logged since the last call.

    Chromium logs "Unexpected response code: 403" for most refusals, but for a 401 (which it takes as
    an authentication challenge) "HTTP Authentication failed; no valid credentials available".
    """
    statuses: list[int] = []
    for entry in driver.get_log("browser"):
        message = entry["message"]
        if "WebSocket connection" not in message:
            continue
        if "HTTP Authentication failed" in message:
            statuses.append(401)
        statuses += [int(code) for code in re.findall(r"Unexpected response code: (\d+)", message)]
    return statuses


def refusal_statuses(driver: webdriver.Chrome) -> list[int]:
    """The statuses of refused handshakes, waiting for the first: the console may lag behind the page's events."""
    seen: list[int] = []

    def logged(d: webdriver.Chrome) -> list[int]:
        seen.extend(logged_statuses(d))
        return seen

    return wait_for(driver, logged, "Chromium to log the refused handshake")


def ws_url(app: ServerProcess) -> str:
    return app.url.replace("http://", "ws://") + "/ws"


def save_screenshot(driver: webdriver.Chrome, tmp_path: Path, name: str) -> Path:
    """A PNG of the page, in tmp_path and, when PERSESSION_SCREENSHOTS names a directory, there too."""
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path))
    keep = os.environ.get("PERSESSION_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(keep) / path.name)
    return path


def test_login_form_counter_survives_reloads_and_a_restart(browser: webdriver.Chrome, app: ServerProcess) -> None:
    """Logging in with the form shows the user; the counter goes on across reloads and a killed-and-restarted server."""
    log_in_with_the_form(browser, app, "alice")
    assert counter(browser) == 1
    browser.refresh()
    assert counter(browser) == 2
    app.kill()  # as a crash would: nothing is flushed on the way out
    app.stop()
    app.start()  # the same port and the same SQLite file
    browser.refresh()
    assert browser.find_element(By.ID, "user").text == "alice"
    assert counter(browser) == 3
    browser.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    wait_for(browser, lambda d: d.find_elements(By.NAME, "user"), "the login form after logging out")
    assert not browser.find_elements(By.ID, "counter")


def test_chat_round_trips_then_logout_closes_and_refuses_it(
    browser: webdriver.Chrome, app: ServerProcess, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The chat's websocket opens and echoes; after logout it is closed with 4001 and a new one is refused (401)."""
    example = request.node.callspec.params["app"]
    log_in_with_the_form(browser, app, "alice")
    wait_for(browser, lambda d: chat_state(d)["opened"], "the chat websocket to open")
    field = browser.find_element(By.ID, "chat-input")
    field.send_keys("hello from Chromium")
    field.submit()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chat-log li"), "the echoed chat message")
    assert browser.find_element(By.CSS_SELECTOR, "#chat-log li").text == "alice: hello from Chromium"
    assert chat_state(browser)["messages"][0] == {"type": "hello", "user": "alice"}
    assert browser.find_element(By.ID, "chat-status").text == "connected"
    screenshot = save_screenshot(browser, tmp_path, example)
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # Log out from this page's JavaScript, keeping the page (and its websocket) open.
    assert browser.execute_async_script("fetch('/logout').then(r => r.json()).then(arguments[0])") == {"user": None}
    field = browser.find_element(By.ID, "chat-input")
    field.send_keys("anyone?")  # Flask's chat notices the logout at its next message; Starlette's is closed already
    field.submit()
    code = wait_for(browser, lambda d: chat_state(d)["closeCode"], "the chat websocket to close")
    assert code == 4001
    assert browser.find_element(By.ID, "chat-status").text == "closed (code 4001)"
    logged_statuses(browser)  # forget earlier console messages

    refused = probe(browser, ws_url(app))
    assert refused == {"opened": False, "error": True, "code": ABNORMAL_CLOSURE, "greeting": None}
    assert refusal_statuses(browser) == [401]


def test_page_from_another_origin_cannot_open_the_chat(
    browser: webdriver.Chrome, app: ServerProcess, tmp_path: Path
) -> None:
    """Logged in, a page of another origin (same host, other port) is refused (403); the app's own page is not."""
    log_in_with_the_form(browser, app, "alice")
    own = probe(browser, ws_url(app))  # the control: this browser's cookie opens the chat from the app's origin
    assert own == {"opened": True, "error": False, "code": 1000, "greeting": {"type": "hello", "user": "alice"}}

    site = tmp_path / "foreign"
    site.mkdir()
    (site / "index.html").write_text(FOREIGN_PAGE, encoding="utf-8")
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)]
    with ServerProcess(argv, port) as foreign:
        assert foreign.url != app.url  # same host, so the browser sends the app's cookie along
        logged_statuses(browser)  # forget earlier console messages
        browser.get(f"{foreign.url}/index.html?target={ws_url(app)}")
        result = wait_for(browser, lambda d: d.execute_script("return window.result"), "the foreign page's probe")
        assert result == {"opened": False, "error": True, "code": ABNORMAL_CLOSURE}
        assert refusal_statuses(browser) == [403]
