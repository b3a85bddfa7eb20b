"""Notion (https://developers.notion.com/reference): a user's workspace as their second
brain — database queries, pages created and updated, block children — with the official
`notion-client` package's `AsyncClient`, every HTTP request of which goes through the
shared provider layer.

How: `notion-client` speaks through an `httpx.AsyncClient` it is given (`client=`). That
client gets `LayerTransport`, an `httpx.AsyncBaseTransport` whose `handle_async_request`
hands each request to `ProviderHTTP.request()`: the outbound budget per integration key
(Notion allows about three requests a second per integration: `CONFIG.rate_limit`, a
burst waits its turn), the breakers (the provider's for shared keys, the key's own for a
user's key), one retry loop honouring `Retry-After` on a 429, the integration error log.
The SDK's own retries are off (`retry=False`), so there is exactly one retry loop, ours.
A failure comes back as the layer's `ProviderError` (Notion's `code` and `message` read
from its error body `{"object": "error", "status", "code", "message"}`), raised through
the SDK unchanged (it re-raises what is not its own).

Retries: GET, and the calls that are reads or overwrites though sent as POST or PATCH
(a database query; setting a page's properties to given values), are marked safe with
an idempotency key of the layer (Notion ignores the header); creating a page or
appending blocks is retried only when Notion provably did nothing (a 429, or a
connection that never opened).

The API version is pinned (`NOTION_VERSION`, the one with `databases/{id}/query`), so
the shapes this module reads do not move under it; the SDK's generic `request()` reaches
the query path its newer endpoint classes no longer name.

One `AsyncClient` per key and base URL, kept by `NotionProvider`, which the registry owns.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import httpx
from notion_client import AsyncClient
from notion_client.errors import NotionClientErrorBase

from providers.errors import ProviderError
from providers.http import ProviderConfig, ProviderHTTP, SdkClients, Timeouts
from providers.retry import RetryPolicy

PROVIDER = "notion"
API_URL = "https://api.notion.com"
NOTION_VERSION = "2022-06-28"
MAX_PAGE_SIZE = 100  # Notion's own bound on page_size

CONFIG = ProviderConfig(
    name=PROVIDER,
    timeouts=Timeouts(connect=5.0, read=30.0, total=40.0),
    pool_size=20,
    concurrency=20,
    # "an average of three requests per second" per integration (Notion's request limits)
    rate_limit="3/second",
    rate_limit_max_wait=5.0,  # a sync's burst queues for its turn rather than failing
    retry=RetryPolicy(max_attempts=6, base=0.5, cap=8.0, budget=120.0, max_retry_after=60.0),
)

# Labels of the call in progress (tenant, request id) for the layer's error log: the
# SDK clients are shared by callers, so the labels travel with the task.
_labels: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "notion_labels", default=None
)
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)
# Response headers describing an encoding the layer already undid (aiohttp decompresses).
_HOP_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding", "connection"})


def is_id(value: str) -> bool:
    """A Notion object id: a UUID, with or without dashes."""
    return bool(_UUID.match(value or ""))


def operation_of(method: str, url: str) -> str:
    """`POST …/v1/databases/<id>/query` → `databases.query`; `PATCH …/v1/pages/<id>` →
    `pages.update`; `PATCH …/v1/blocks/<id>/children` → `blocks.children.append`."""
    path = url.split("?", 1)[0]
    parts = [p for p in path.split("/v1/", 1)[-1].split("/") if p]
    names = [p for p in parts if not is_id(p)]
    base = ".".join(names) or "root"
    method = method.upper()
    if names[-1:] in (["query"], ["me"]):
        return base
    if names[-1:] == ["children"]:
        return f"{base}.append" if method == "PATCH" else f"{base}.list"
    if method == "POST":
        return f"{base}.create"
    if method == "PATCH":
        return f"{base}.update"
    if method == "DELETE":
        return f"{base}.delete"
    return f"{base}.retrieve" if len(names) != len(parts) else f"{base}.list"


# Calls sent as POST/PATCH that are safe to repeat: a query reads; an update of a page's
# properties sets them to the values given.
_SAFE_TO_REPEAT = frozenset({"databases.query", "pages.update"})


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    """Notion's error body: {"object": "error", "status", "code", "message"}."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("object") == "error":
        code = data.get("code")
        return (str(code) if code else None), str(data.get("message") or "")[:500]
    return None, body.decode("utf-8", "replace")[:500] if body else ""


class LayerTransport(httpx.AsyncBaseTransport):
    """httpx's transport, made of the provider layer (see the module docstring)."""

    def __init__(
        self, http: ProviderHTTP, api_key: str, *, own_credential: bool, guard_url: bool
    ) -> None:
        self.http = http
        self._api_key = api_key
        self.own_credential = own_credential
        self.guard_url = guard_url

    def __repr__(self) -> str:  # never the key
        return f"LayerTransport(own={self.own_credential})"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        url = str(request.url)
        operation = operation_of(request.method, url)
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        key = None
        if operation in _SAFE_TO_REPEAT:
            digest = hashlib.sha256(request.method.encode() + url.encode() + body).hexdigest()
            key = f"notion-{digest[:32]}"
        response = await self.http.request(
            request.method,
            url,
            operation=operation,
            credential=self._api_key,
            headers=headers,
            data=body or None,
            idempotency_key=key,
            parse_error=parse_error,
            labels=_labels.get() or {},
            own_credential=self.own_credential,
            guard_url=self.guard_url,
        )
        kept = [(k, v) for k, v in response.headers.items() if k.lower() not in _HOP_HEADERS]
        return httpx.Response(response.status, headers=kept, content=response.body, request=request)


class NotionClient:
    """One key's view of Notion (cheap: the SDK client behind it is shared)."""

    def __init__(self, sdk: AsyncClient, *, labels: Mapping[str, str] | None = None) -> None:
        self._sdk = sdk
        self.labels = dict(labels or {})

    def __repr__(self) -> str:
        return "NotionClient()"

    async def _call(self, operation: str, path: str, method: str, **kwargs: Any) -> Any:
        token = _labels.set(self.labels)
        try:
            return await self._sdk.request(path=path, method=method, **kwargs)
        except NotionClientErrorBase as err:  # the SDK's own refusal (a bad path)
            raise ProviderError(
                PROVIDER, operation, status=400, vendor_code=str(err.code),
                message=str(err)[:500], retryable=False,
            ) from None  # fmt: skip
        finally:
            _labels.reset(token)

    async def me(self) -> dict[str, Any]:
        """The integration's bot user: Notion's cheap authenticated call."""
        data: dict[str, Any] = await self._call("users.me", "users/me", "GET")
        return data

    async def retrieve_database(self, database_id: str) -> dict[str, Any]:
        _check_id(database_id, "databases.retrieve")
        data: dict[str, Any] = await self._call(
            "databases.retrieve", f"databases/{database_id}", "GET"
        )
        return data

    async def query_database(
        self,
        database_id: str,
        *,
        filter: dict[str, Any] | None = None,
        sorts: list[Any] | None = None,
        start_cursor: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> dict[str, Any]:
        """One page of the database's pages: {"results", "next_cursor", "has_more"}."""
        _check_id(database_id, "databases.query")
        body: dict[str, Any] = {"page_size": max(1, min(page_size, MAX_PAGE_SIZE))}
        if filter:
            body["filter"] = filter
        if sorts:
            body["sorts"] = sorts
        if start_cursor:
            body["start_cursor"] = start_cursor
        data: dict[str, Any] = await self._call(
            "databases.query", f"databases/{database_id}/query", "POST", body=body
        )
        return data

    async def create_page(
        self,
        database_id: str,
        properties: Mapping[str, Any],
        *,
        children: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        _check_id(database_id, "pages.create")
        body: dict[str, Any] = {
            "parent": {"database_id": database_id},
            "properties": dict(properties),
        }
        if children:
            body["children"] = children
        data: dict[str, Any] = await self._call("pages.create", "pages", "POST", body=body)
        return data

    async def update_page(self, page_id: str, properties: Mapping[str, Any]) -> dict[str, Any]:
        _check_id(page_id, "pages.update")
        data: dict[str, Any] = await self._call(
            "pages.update", f"pages/{page_id}", "PATCH", body={"properties": dict(properties)}
        )
        return data

    async def retrieve_page(self, page_id: str) -> dict[str, Any]:
        _check_id(page_id, "pages.retrieve")
        data: dict[str, Any] = await self._call("pages.retrieve", f"pages/{page_id}", "GET")
        return data

    async def block_children(
        self, block_id: str, *, start_cursor: str | None = None, page_size: int = MAX_PAGE_SIZE
    ) -> dict[str, Any]:
        _check_id(block_id, "blocks.children.list")
        query: dict[str, Any] = {"page_size": max(1, min(page_size, MAX_PAGE_SIZE))}
        if start_cursor:
            query["start_cursor"] = start_cursor
        data: dict[str, Any] = await self._call(
            "blocks.children.list", f"blocks/{block_id}/children", "GET", query=query
        )
        return data

    async def append_blocks(self, block_id: str, children: list[dict[str, Any]]) -> dict[str, Any]:
        _check_id(block_id, "blocks.children.append")
        data: dict[str, Any] = await self._call(
            "blocks.children.append", f"blocks/{block_id}/children", "PATCH",
            body={"children": children},
        )  # fmt: skip
        return data


def _check_id(value: str, operation: str) -> None:
    if not is_id(value):
        raise ProviderError(
            PROVIDER, operation, status=400, vendor_code="validation_error",
            message="an id must be a UUID", retryable=False,
        )  # fmt: skip


async def verify_key(client: NotionClient) -> None:
    """Raises ProviderError when Notion did not accept the client's key."""
    await client.me()


class NotionProvider:
    """The SDK clients, one per key and base URL, on the registry's Notion layer."""

    def __init__(self, http: ProviderHTTP) -> None:
        self.http = http
        self._clients: SdkClients[AsyncClient] = SdkClients()

    def client(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        own_credential: bool = False,
        guard_url: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> NotionClient:
        url = (base_url or API_URL).rstrip("/")

        def make() -> AsyncClient:
            transport = LayerTransport(
                self.http, api_key, own_credential=own_credential, guard_url=guard_url
            )
            return AsyncClient(
                client=httpx.AsyncClient(transport=transport),
                auth=api_key,
                base_url=url,
                notion_version=NOTION_VERSION,
                retry=False,  # one retry loop: the layer's
                timeout_ms=int(CONFIG.timeouts.total * 1000 * 4),  # the layer times out first
            )

        sdk = self._clients.get((api_key, url, own_credential, guard_url), make)
        return NotionClient(sdk, labels=labels)

    async def aclose(self) -> None:
        for sdk in self._clients.take_all():
            await sdk.aclose()
