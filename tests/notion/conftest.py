"""Notion fixtures: the gateway on a real port with its own Notion sandbox (what
connections call while sandboxes are on), a worker, and helpers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from models.jobs import Job, JobStatus
from providers.sandbox.notion import SANDBOX_DATABASE_ID, NotionSandbox
from tests.conftest import Account, free_port, gql, make_settings, running_server

KEY = "secret_ntn_" + "k" * 30
DB = SANDBOX_DATABASE_ID

CONNECT = """mutation($i: ConnectNotionInput!) { connectNotion(input: $i) { connection {
  id databaseId databaseTitle workspaceName keyHint active inactiveReason } } }"""
CONNECTION = "{ notionConnection { id databaseId active inactiveReason keyHint } }"
DISCONNECT = "mutation { disconnectNotion { disconnected } }"
ITEMS = """query($f: JSON, $s: JSON, $first: Int, $after: String) {
  notionDatabaseItems(filter: $f, sorts: $s, first: $first, after: $after) {
    edges { cursor node { id title url properties } }
    pageInfo { hasNextPage hasPreviousPage endCursor } } }"""
CREATE_PAGE = """mutation($i: CreateNotionPageInput!) { createNotionPage(input: $i) {
  item { id title url properties } } }"""
SYNC_FIELDS = "id status full total created updated failed reason errors { contactId message }"
SYNC = (
    "mutation($i: SyncContactsToNotionInput!) { syncContactsToNotion(input: $i) { sync { "
    + SYNC_FIELDS
    + " } } }"
)
SYNC_QUERY = "query($id: ID!) { notionSync(id: $id) { " + SYNC_FIELDS + " } }"


@dataclass
class Gateway:
    client: httpx.AsyncClient
    url: str
    app: Any

    @property
    def notion(self) -> NotionSandbox:
        sandbox: NotionSandbox = self.app.state.services.sandboxes["notion"]
        return sandbox

    @property
    def settings(self) -> Any:
        return self.app.state.services.settings

    async def connect(self, account: Account, key: str = KEY, database: str = DB) -> dict[str, Any]:
        return await gql(
            self.client, CONNECT, {"i": {"apiKey": key, "databaseId": database}}, account.token
        )

    async def sync(self, account: Account, full: bool = False) -> dict[str, Any]:
        body = await gql(self.client, SYNC, {"i": {"full": full}}, account.token)
        assert "errors" not in body, body
        return dict(body["data"]["syncContactsToNotion"]["sync"])

    async def sync_state(self, account: Account, gid: str) -> dict[str, Any]:
        body = await gql(self.client, SYNC_QUERY, {"id": gid}, account.token)
        assert "errors" not in body, body
        return dict(body["data"]["notionSync"])

    def pages(self) -> list[dict[str, Any]]:
        return [p for w in self.notion.workspaces.values() for p in w.pages.values()]


@pytest.fixture(autouse=True)
async def _no_leftover_jobs(store: Any) -> AsyncIterator[None]:
    yield
    await Job.filter(status__in=[JobStatus.QUEUED.value, JobStatus.FAILED.value]).delete()


@contextlib.asynccontextmanager
async def serving(
    store: Any, worker: Any, *, run_jobs: bool = True, **extra: Any
) -> AsyncIterator[Gateway]:
    port = free_port()
    overrides = {
        "database_url": store.url,
        "public_url": f"http://127.0.0.1:{port}",
        "sandbox_enabled": True,
        **extra,
    }
    app = create_app(make_settings(**overrides), configure_logs=False)
    async with running_server(app, port) as url:
        if run_jobs:
            await worker(**overrides)
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            yield Gateway(client, url, app)


@pytest.fixture
async def gateway(store: Any, worker: Any) -> AsyncIterator[Gateway]:
    async with serving(store, worker) as served:
        yield served
