"""The OpenAI sandbox, driven by the official `openai` SDK over real HTTP."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from providers.sandbox.openai import create_app
from tests.conftest import running_server

MESSAGES = [{"role": "user", "content": "Plan my day, please."}]


@pytest.fixture
async def sandbox():
    app = create_app(tokens_per_second=0)
    async with running_server(app) as url:
        yield url


def sdk(url: str, key: str = "sk-test-abcdef123456") -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0)


async def control(url: str, path: str, body: dict | None = None, method: str = "POST") -> dict:
    async with httpx.AsyncClient() as h:
        r = await h.request(method, f"{url}/_sandbox/{path}", json=body)
        assert r.status_code < 300, r.text
        return r.json()


async def test_models_and_deterministic_plain_completion(sandbox):
    client = sdk(sandbox)
    ids = [m.id async for m in client.models.list()]
    assert "gpt-4o-mini" in ids
    one = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    two = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    other = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Something else"}]
    )
    assert one.choices[0].message.content == two.choices[0].message.content
    assert one.choices[0].message.content != other.choices[0].message.content
    assert one.choices[0].finish_reason == "stop"
    assert one.usage.completion_tokens == len(one.choices[0].message.content.split())


async def test_stream_matches_plain_and_ends_with_usage(sandbox):
    client = sdk(sandbox)
    plain = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = [], None, None
    async for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert "".join(text) == plain.choices[0].message.content
    assert finish == "stop"
    assert usage.completion_tokens == plain.usage.completion_tokens


async def test_max_tokens_cuts_with_length(sandbox):
    result = await sdk(sandbox).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
    )
    assert result.choices[0].finish_reason == "length"
    assert result.usage.completion_tokens == 5


async def test_vendor_error_bodies(sandbox):
    with pytest.raises(openai.AuthenticationError) as bad_key:
        await sdk(sandbox, "sk-invalid-0000000000").chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
    assert bad_key.value.code == "invalid_api_key"
    assert "sk-invalid-0000000000" not in str(bad_key.value.body)

    with pytest.raises(openai.BadRequestError) as too_long:
        await sdk(sandbox).chat.completions.create(
            model="gpt-3.5-turbo", messages=[{"role": "user", "content": "word " * 17000}]
        )
    assert too_long.value.code == "context_length_exceeded"
    assert too_long.value.body["param"] == "messages"

    with pytest.raises(openai.NotFoundError) as unknown:
        await sdk(sandbox).chat.completions.create(model="gpt-nope", messages=MESSAGES)
    assert unknown.value.code == "model_not_found"

    # The framework's arrival faults answer with OpenAI's body for the status.
    await control(sandbox, "faults", {"status": 429, "retry_after": 7})
    with pytest.raises(openai.RateLimitError) as limited:
        await sdk(sandbox).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after"] == "7"


async def test_rate_limit_mid_stream(sandbox):
    await control(sandbox, "stream", {"kind": "rate_limit", "after_chunks": 3})
    stream = await sdk(sandbox).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    got = []
    with pytest.raises(openai.APIError) as failed:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert len(got) == 3
    assert failed.value.code == "rate_limit_exceeded"


async def test_token_rate_header_and_disconnect_recorded(sandbox):
    client = sdk(sandbox)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        extra_headers={"X-Sandbox-Tokens-Per-Second": "20"},
    )
    n = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            n += 1
            if n == 2:
                break
    await stream.close()
    for _ in range(100):
        requests = (await control(sandbox, "requests", method="GET"))["requests"]
        last = requests[-1]
        if last.get("disconnected_at"):
            break
        await asyncio.sleep(0.05)
    assert last["disconnected_at"] is not None
    assert last["finished_at"] is None
    assert 2 <= last["chunks_sent"] < 24
    # The key is never recorded, only a digest of it.
    assert "sk-test" not in str(last["headers"])


async def test_stream_control_validates(sandbox):
    async with httpx.AsyncClient() as h:
        bad = await h.post(f"{sandbox}/_sandbox/stream", json={"kind": "nonsense"})
        assert bad.status_code == 400
        ok = await h.post(f"{sandbox}/_sandbox/stream", json={"tokens_per_second": 5})
        assert ok.json()["tokens_per_second"] == 5
        cleared = await h.delete(f"{sandbox}/_sandbox/stream")
        assert cleared.json()["tokens_per_second"] == 0


async def test_answer_length_control(sandbox):
    client = sdk(sandbox)
    default = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    default_words = default.choices[0].message.content.split()
    assert 24 <= len(default_words) <= 64

    view = await control(sandbox, "stream", {"answer_tokens": 500})
    assert view["answer_tokens"] == 500
    long = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    again = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    words = long.choices[0].message.content.split()
    assert len(words) == 500 == long.usage.completion_tokens
    assert long.choices[0].finish_reason == "stop"
    assert long.choices[0].message.content == again.choices[0].message.content
    # Same seed: the set length keeps the default answer's opening words.
    assert words[: len(default_words) - 1] == default_words[:-1]

    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, max_tokens=120
    )
    streamed, finish = [], None
    async for chunk in stream:
        if chunk.choices:
            streamed.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert len("".join(streamed).split()) == 120
    assert finish == "length"

    async with httpx.AsyncClient() as h:
        for bad in (0, -3, "many", 2.5, True):
            r = await h.post(f"{sandbox}/_sandbox/stream", json={"answer_tokens": bad})
            assert r.status_code == 400, bad
    assert (await control(sandbox, "stream", {"answer_tokens": None}))["answer_tokens"] is None
    back = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert back.choices[0].message.content == default.choices[0].message.content
    await control(sandbox, "stream", {"answer_tokens": 30})
    cleared = await control(sandbox, "stream", method="DELETE")
    assert cleared["answer_tokens"] is None
