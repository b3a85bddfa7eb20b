"""Resend's batch endpoint through the client, against the sandbox over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from kit.ratelimit import RateLimiter
from providers import resend
from providers.breaker import BreakerPolicy
from providers.errors import ProviderError
from providers.http import ProviderConfig, ProviderHTTP
from providers.retry import RetryPolicy
from providers.sandbox.resend import ResendSandbox
from tests.conftest import running_server


@pytest.fixture
async def client() -> AsyncIterator[tuple[resend.ResendClient, httpx.AsyncClient]]:
    app = ResendSandbox()
    http = ProviderHTTP(
        ProviderConfig(
            name="resend",
            retry=RetryPolicy(max_attempts=3, base=0.05, cap=0.1, budget=5.0),
            breaker=BreakerPolicy(threshold=100),
        ),
        limiter=RateLimiter(),
    )
    try:
        async with running_server(app) as url, httpx.AsyncClient(base_url=url) as control:
            yield resend.ResendClient(http, "re_batch_test", base_url=url), control
    finally:
        await http.aclose()


def emails(n: int, bad: int | None = None) -> list[dict[str, object]]:
    return [
        resend.email_payload(
            sender="Acme <news@acme.test>",
            to="not-an-address" if i == bad else f"r{i}@example.com",
            subject=f"News {i}",
            text="Hello",
        )
        for i in range(n)
    ]


async def test_a_batch_is_one_request_with_ids_in_order(client) -> None:
    api, control = client
    sent = await api.send_batch(emails(3), idempotency_key="batch-a")
    assert len({s.id for s in sent}) == 3
    for i, one in enumerate(sent):
        assert (await api.get_email(one.id)).subject == f"News {i}"
    again = await api.send_batch(emails(3), idempotency_key="batch-a")  # a retried job
    assert [s.id for s in again] == [s.id for s in sent]
    recorded = (await control.get("/_sandbox/requests")).json()["requests"]
    assert [r["path"] for r in recorded if r["method"] == "POST"] == ["/emails/batch"] * 2


async def test_one_bad_email_refuses_the_whole_batch(client) -> None:
    api, _ = client
    with pytest.raises(ProviderError) as refused:
        await api.send_batch(emails(3, bad=1), idempotency_key="batch-b")
    assert refused.value.status == 422 and "emails[1]" in str(refused.value)
    with pytest.raises(ValueError):
        await api.send_batch(emails(101), idempotency_key="batch-c")
    with pytest.raises(ProviderError) as changed:  # same key, other emails
        await api.send_batch(emails(3), idempotency_key="batch-d")
        await api.send_batch(emails(2), idempotency_key="batch-d")
    assert changed.value.status == 409
