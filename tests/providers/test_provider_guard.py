"""ProviderHTTP.guard(): the shared layer around an SDK client's calls, driven through
the OpenAI client (official SDK) against the OpenAI sandbox over real HTTP."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from providers.breaker import BreakerPolicy, BreakerState
from providers.errors import CircuitOpen, FailureEvent, ProviderError
from providers.http import ProviderConfig, ProviderHTTP
from providers.openai import OpenAICredential, OpenAIProvider
from providers.retry import RetryPolicy
from providers.sandbox.openai import create_app
from tests.conftest import running_server

MESSAGES = [{"role": "user", "content": "Plan my day, please."}]
KEY = "sk-guard-test-0123456789"


@pytest.fixture
async def sandbox():
    app = create_app(tokens_per_second=0)
    async with running_server(app) as url:
        yield url


async def control(url: str, path: str, body: dict | None = None, method: str = "POST") -> dict:
    async with httpx.AsyncClient() as h:
        r = await h.request(method, f"{url}/_sandbox/{path}", json=body)
        assert r.status_code < 300, r.text
        return r.json()


async def requests_to(url: str, path: str) -> list[dict]:
    return (await control(url, f"requests?path={path}", method="GET"))["requests"]


class Rig:
    def __init__(self, url: str, *, max_concurrent: int = 5, queue_timeout: float = 5.0) -> None:
        self.events: list[FailureEvent] = []
        self.http = ProviderHTTP(
            ProviderConfig(
                "openai",
                retry=RetryPolicy(base=0.01, cap=0.02),
                breaker=BreakerPolicy(threshold=2, cooldown=60),
            ),
            hooks=[self.events.append],
        )
        self.provider = OpenAIProvider(
            self.http, max_concurrent=max_concurrent, queue_timeout=queue_timeout
        )
        self.cred = OpenAICredential(KEY, base_url=f"{url}/v1")

    async def aclose(self) -> None:
        await self.provider.aclose()
        await self.http.aclose()


@pytest.fixture
async def rig(sandbox):
    rig = Rig(sandbox)
    yield rig
    await rig.aclose()


async def test_idempotent_call_is_retried_and_counted_once(rig: Rig, sandbox: str) -> None:
    await control(sandbox, "faults", {"status": 503, "path": "/v1/models"})
    models = await rig.provider.list_models(rig.cred)
    assert models
    assert len(await requests_to(sandbox, "/v1/models")) == 2
    assert rig.events == []
    assert rig.http.stats.calls == 1 and rig.http.stats.failures == 0


async def test_non_idempotent_5xx_is_final_and_opens_the_breaker(rig: Rig, sandbox: str) -> None:
    await control(sandbox, "faults", {"status": 503, "count": 2, "path": "/v1/chat"})
    for _ in range(2):
        with pytest.raises(ProviderError) as failed:
            await rig.provider.chat(rig.cred, messages=MESSAGES, model="gpt-4o-mini")
        assert failed.value.status == 503
    assert len(await requests_to(sandbox, "/v1/chat")) == 2  # no retry of a POST
    assert [(e.status, e.attempts) for e in rig.events] == [(503, 1), (503, 1)]
    assert rig.events[0].credential_fingerprint == rig.cred.fingerprint
    assert (await rig.http.breaker_state())[0] is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as refused:
        await rig.provider.chat(rig.cred, messages=MESSAGES, model="gpt-4o-mini")
    assert refused.value.scope == "provider"
    assert len(await requests_to(sandbox, "/v1/chat")) == 2  # failed fast


async def test_refused_key_pauses_the_key_not_the_provider(rig: Rig, sandbox: str) -> None:
    bad = OpenAICredential("sk-invalid-key-000000", base_url=rig.cred.base_url)
    for _ in range(2):
        with pytest.raises(ProviderError) as refused:
            await rig.provider.chat(bad, messages=MESSAGES, model="gpt-4o-mini")
        assert refused.value.status == 401
    with pytest.raises(CircuitOpen) as paused:
        await rig.provider.chat(bad, messages=MESSAGES, model="gpt-4o-mini")
    assert paused.value.scope == "credential"
    assert (await rig.http.breaker_state())[0] is BreakerState.CLOSED
    done = await rig.provider.chat(rig.cred, messages=MESSAGES, model="gpt-4o-mini")
    assert done.text


async def test_mid_stream_failure_is_recorded_once_and_frees_the_slot(
    rig: Rig, sandbox: str
) -> None:
    await control(sandbox, "stream", {"kind": "server_error", "after_chunks": 2})
    got = []
    with pytest.raises(ProviderError) as failed:
        async with rig.provider.stream_chat(
            rig.cred, messages=MESSAGES, model="gpt-4o-mini"
        ) as chunks:
            async for chunk in chunks:
                if chunk.delta:
                    got.append(chunk.delta)
    assert len(got) == 2
    assert failed.value.status == 500
    assert len(rig.events) == 1 and rig.events[0].operation == "chat.completions.stream"
    assert rig.http.stats.calls == 1 and rig.http.stats.failures == 1
    assert rig.provider._slot(rig.cred)._value == rig.provider.max_concurrent


async def test_consumer_leaving_a_stream_is_a_success(rig: Rig, sandbox: str) -> None:
    async with rig.provider.stream_chat(rig.cred, messages=MESSAGES, model="gpt-4o-mini") as chunks:
        async for _ in chunks:
            break
    assert rig.events == []
    assert rig.http.stats.calls == 1 and rig.http.stats.last_success_at is not None
    assert rig.provider._slot(rig.cred)._value == rig.provider.max_concurrent


async def test_an_open_stream_holds_its_slot(sandbox: str) -> None:
    rig = Rig(sandbox, max_concurrent=1, queue_timeout=0.2)
    try:
        async with rig.provider.stream_chat(
            rig.cred, messages=MESSAGES, model="gpt-4o-mini"
        ) as chunks:
            with pytest.raises(ProviderError) as busy:
                await rig.provider.chat(rig.cred, messages=MESSAGES, model="gpt-4o-mini")
            assert busy.value.vendor_code == "local_concurrency"
            assert [c async for c in chunks]
        done = await rig.provider.chat(rig.cred, messages=MESSAGES, model="gpt-4o-mini")
        assert done.text
        assert [e.vendor_code for e in rig.events] == ["local_concurrency"]
    finally:
        await rig.aclose()


async def test_cancelled_call_gives_its_slot_back(sandbox: str) -> None:
    rig = Rig(sandbox, max_concurrent=1, queue_timeout=0.2)
    try:
        await control(sandbox, "faults", {"latency_ms": 5000, "path": "/v1/chat"})
        task = asyncio.create_task(
            rig.provider.chat(rig.cred, messages=MESSAGES, model="gpt-4o-mini")
        )
        for _ in range(200):
            if (await control(sandbox, "stats", method="GET"))["in_flight"]:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        done = await rig.provider.chat(rig.cred, messages=MESSAGES, model="gpt-4o-mini")
        assert done.text
    finally:
        await rig.aclose()
