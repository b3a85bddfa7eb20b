"""The AI tests' gateway: a real server process on the test's store, with the OpenAI
sandbox (tests/ai/test_ai.py `gateway`), and an HTTP client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.ai.test_ai import gateway


@pytest.fixture
async def server(store) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    async with gateway(store) as url:
        yield url


@pytest.fixture
async def http(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        yield client
