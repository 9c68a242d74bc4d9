"""Refresh docs/_static/screenshots/{starlette,flask}.png from the browser tests.

Run from anywhere: ``python docs/screenshots.py``. It runs the chat test of
tests/test_browser.py (both examples, served by their README commands, in
Debian's headless Chromium) with PERSESSION_SCREENSHOTS pointing here, so the
pictures are those of a passing test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
SCREENSHOTS = DOCS / "_static" / "screenshots"


def main() -> int:
    """Run the browser test that takes the screenshots; return its exit status."""
    env = {**os.environ, "PERSESSION_SCREENSHOTS": str(SCREENSHOTS)}
    test = "tests/test_browser.py::test_chat_round_trips_then_logout_closes_and_refuses_it"
    argv = [sys.executable, "-m", "pytest", test, "--no-cov", "-p", "no:cacheprovider", "-q"]
    status = subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode  # noqa: S603 - our own test run
    if status == 0:
        for path in sorted(SCREENSHOTS.glob("*.png")):
            print(f"wrote {path.relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
