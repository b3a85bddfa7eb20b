"""The Notion sandbox as the official `notion-client` sees it (its own httpx client,
nothing of ours in between), and the gateway's client over the provider layer: 429s
with Retry-After waited out, the outbound pace, the breaker, error mapping."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from notion_client import APIResponseError, AsyncClient

from providers import notion
from providers.breaker import BreakerPolicy
from providers.errors import CircuitOpen, ProviderError
from providers.http import ProviderConfig
from providers.registry import ProviderRegistry
from providers.retry import RetryPolicy
from providers.sandbox.notion import SANDBOX_DATABASE_ID, NotionSandbox
from tests.conftest import running_server

DB = SANDBOX_DATABASE_ID


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[NotionSandbox, str]]:
    app = NotionSandbox()
    async with running_server(app) as url:
        yield app, url


@pytest.fixture
async def sdk(sandbox: tuple[NotionSandbox, str]) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(
        auth="secret_library", base_url=sandbox[1], notion_version=notion.NOTION_VERSION,
        retry=False,
    )  # fmt: skip
    yield client
    await client.aclose()


def props(name: str, email: str = "", company: str = "", tags: tuple[str, ...] = ()) -> Any:
    return {
        "Name": {"title": [{"text": {"content": name}}]},
        "Email": {"email": email or None},
        "Company": {"rich_text": [{"text": {"content": company}}] if company else []},
        "Tags": {"multi_select": [{"name": t} for t in tags]},
    }


async def query(sdk: AsyncClient, body: dict[str, Any]) -> Any:
    return await sdk.request(path=f"databases/{DB}/query", method="POST", body=body)


async def test_the_library_queries_with_filters_sorts_and_cursors(sdk: AsyncClient) -> None:
    me = await sdk.users.me()
    assert me["object"] == "user" and me["type"] == "bot"
    db = await sdk.databases.retrieve(DB)
    assert db["properties"]["Name"]["type"] == "title"
    for i, (company, tags) in enumerate(
        [("Acme", ("vip",)), ("Globex", ()), ("Acme Labs", ("vip", "eu")), ("Initech", ("eu",))]
    ):
        page = await sdk.pages.create(
            parent={"database_id": DB}, properties=props(f"P{i}", f"p{i}@x.io", company, tags)
        )
        assert page["object"] == "page" and page["parent"]["database_id"] == DB
    got = await query(sdk, {"filter": {"property": "Company", "rich_text": {"contains": "acme"}}})
    assert sorted(p["properties"]["Name"]["title"][0]["plain_text"] for p in got["results"]) == [
        "P0", "P2",
    ]  # fmt: skip
    both = await query(sdk, {"filter": {"and": [
        {"property": "Tags", "multi_select": {"contains": "vip"}},
        {"property": "Tags", "multi_select": {"contains": "eu"}},
    ]}})  # fmt: skip
    assert [p["properties"]["Email"]["email"] for p in both["results"]] == ["p2@x.io"]
    either = await query(sdk, {"filter": {"or": [
        {"property": "Email", "email": {"equals": "p1@x.io"}},
        {"property": "Name", "title": {"equals": "P3"}},
    ]}, "sorts": [{"property": "Name", "direction": "descending"}]})  # fmt: skip
    names = [p["properties"]["Name"]["title"][0]["plain_text"] for p in either["results"]]
    assert names == ["P3", "P1"]
    first = await query(
        sdk, {"page_size": 3, "sorts": [{"property": "Name", "direction": "ascending"}]}
    )
    assert first["has_more"] and len(first["results"]) == 3 and first["next_cursor"]
    rest = await query(
        sdk,
        {
            "page_size": 3,
            "start_cursor": first["next_cursor"],
            "sorts": [{"property": "Name", "direction": "ascending"}],
        },
    )
    assert not rest["has_more"] and rest["next_cursor"] is None
    assert [p["properties"]["Name"]["title"][0]["plain_text"] for p in rest["results"]] == ["P3"]
    # Update, then blocks.
    pid = first["results"][0]["id"]
    updated = await sdk.pages.update(pid, properties={"Company": {"rich_text": [
        {"text": {"content": "Umbrella"}}]}})  # fmt: skip
    assert updated["properties"]["Company"]["rich_text"][0]["plain_text"] == "Umbrella"
    await sdk.blocks.children.append(pid, children=[
        {"object": "block", "type": "paragraph",
         "paragraph": {"rich_text": [{"type": "text", "text": {"content": f"line {n}"}}]}}
        for n in range(5)
    ])  # fmt: skip
    blocks = await sdk.blocks.children.list(pid, page_size=2)
    assert blocks["has_more"] and len(blocks["results"]) == 2
    assert blocks["results"][0]["paragraph"]["rich_text"][0]["plain_text"] == "line 0"


async def test_errors_are_notions_own(sdk: AsyncClient, sandbox: tuple[NotionSandbox, str]) -> None:
    with pytest.raises(APIResponseError) as missing:
        await sdk.databases.retrieve("00000000-0000-4000-8000-000000000000")
    assert missing.value.status == 404 and missing.value.code == "object_not_found"
    with pytest.raises(APIResponseError) as bad:
        await sdk.pages.create(parent={"database_id": DB}, properties={"Nope": {"title": []}})
    assert bad.value.status == 400 and bad.value.code == "validation_error"
    with pytest.raises(APIResponseError) as too_big:
        await query(sdk, {"page_size": 101})
    assert too_big.value.code == "validation_error"
    with pytest.raises(APIResponseError) as bad_filter:
        await query(sdk, {"filter": {"property": "Name", "title": {"resembles": "x"}}})
    assert bad_filter.value.code == "validation_error"
    with pytest.raises(APIResponseError):
        await sdk.pages.create(parent={"database_id": DB},
                               properties=props("x" * 2001))  # fmt: skip
    refused = AsyncClient(auth="secret_invalid", base_url=sandbox[1])
    with pytest.raises(APIResponseError) as unauthorized:
        await refused.users.me()
    assert unauthorized.value.status == 401 and unauthorized.value.code == "unauthorized"
    await refused.aclose()
    async with httpx.AsyncClient(base_url=sandbox[1]) as raw:
        answer = await raw.post("/_sandbox/faults", json={"status": 429, "retry_after": 1})
        assert answer.status_code == 201
        limited = await raw.get(
            "/v1/users/me",
            headers={"Authorization": "Bearer secret_x", "Notion-Version": notion.NOTION_VERSION},
        )
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        assert limited.json()["object"] == "error" and limited.json()["code"] == "rate_limited"


def fast_registry(rate: str | None = "50/second", threshold: int = 5) -> ProviderRegistry:
    registry = ProviderRegistry()
    registry.configure(
        ProviderConfig(
            name="notion", rate_limit=rate, rate_limit_max_wait=5.0,
            retry=RetryPolicy(max_attempts=4, base=0.01, cap=0.05, budget=20),
            breaker=BreakerPolicy(threshold=threshold),
        )
    )  # fmt: skip
    return registry


async def test_the_gateway_client_waits_out_a_429_and_maps_errors(
    sandbox: tuple[NotionSandbox, str],
) -> None:
    _app, url = sandbox
    registry = fast_registry()
    client = registry.notion().client("secret_gateway", base_url=url)
    async with httpx.AsyncClient(base_url=url) as control:
        await control.post("/_sandbox/faults", json={"status": 429, "retry_after": 1,
                                                     "path": "/v1/pages"})  # fmt: skip
        started = time.monotonic()
        page = await client.create_page(DB, props("Retried", "r@x.io"))
        assert time.monotonic() - started >= 0.9  # Retry-After honoured, not guessed
        sent = (await control.get("/_sandbox/requests", params={"path": "/v1/pages"})).json()
        assert [r["status"] for r in sent["requests"]] == [429, 200]
        got = await client.query_database(
            DB, filter={"property": "Email", "email": {"equals": "r@x.io"}}
        )
        assert [p["id"] for p in got["results"]] == [page["id"]]  # created once
        with pytest.raises(ProviderError) as refused:
            await client.create_page(DB, {"Nope": {"title": []}})
        assert refused.value.status == 400 and refused.value.vendor_code == "validation_error"
        assert refused.value.is_caller_error and "Nope" in refused.value.message
        with pytest.raises(ProviderError) as missing:
            await client.retrieve_database("00000000-0000-4000-8000-000000000000")
        assert missing.value.status == 404 and missing.value.operation == "databases.retrieve"
        with pytest.raises(ProviderError) as not_an_id:
            await client.retrieve_page("../../users/me")
        assert not_an_id.value.status == 400
        # A vendor failing over and over opens the provider's breaker.
        await control.post("/_sandbox/faults", json={"status": 503, "count": -1})
        errors: list[ProviderError] = []
        for _ in range(8):
            try:
                await client.me()
            except ProviderError as err:
                errors.append(err)
        assert any(isinstance(e, CircuitOpen) for e in errors), errors
        await control.delete("/_sandbox/faults")
    await registry.aclose()


async def test_the_gateway_client_paces_under_notions_limit(
    sandbox: tuple[NotionSandbox, str],
) -> None:
    app, url = sandbox
    app.rate_per_second = 12  # Notion's own limit, as the sandbox enforces it
    registry = fast_registry(rate="10/second")
    client = registry.notion().client("secret_paced", base_url=url)
    for n in range(30):
        await client.create_page(DB, props(f"paced {n}"))
    async with httpx.AsyncClient(base_url=url) as control:
        sent = (await control.get("/_sandbox/requests")).json()["requests"]
    assert [r["status"] for r in sent] == [200] * 30  # never refused
    times = [r["at"] for r in sent]
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 12
    await registry.aclose()


def test_operation_names() -> None:
    op = notion.operation_of
    base = "http://x/v1/"
    assert op("POST", base + f"databases/{DB}/query") == "databases.query"
    assert op("GET", base + f"databases/{DB}") == "databases.retrieve"
    assert op("POST", base + "pages") == "pages.create"
    assert op("PATCH", base + f"pages/{DB}") == "pages.update"
    assert op("GET", base + f"blocks/{DB}/children?page_size=3") == "blocks.children.list"
    assert op("PATCH", base + f"blocks/{DB}/children") == "blocks.children.append"
    assert op("GET", base + "users/me") == "users.me"
