"""Shared fixtures: the async backend, and real servers."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # The drivers (redis.asyncio, AsyncMongoClient) are asyncio-only.
    return "asyncio"
