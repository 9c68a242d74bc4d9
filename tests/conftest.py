"""Shared fixtures: the async backend, and real servers."""

from __future__ import annotations

import pytest

import persession.config


@pytest.fixture(autouse=True)
def _short_secret_warning_already_given(monkeypatch: pytest.MonkeyPatch) -> None:
    # Most tests use short literal secrets: the once-per-process warning would land in whichever test
    # builds the first config. The tests of the warning set the flag back to False.
    monkeypatch.setattr(persession.config, "_short_secret_warned", True)


@pytest.fixture
def anyio_backend() -> str:
    # The drivers (redis.asyncio, AsyncMongoClient) are asyncio-only.
    return "asyncio"
