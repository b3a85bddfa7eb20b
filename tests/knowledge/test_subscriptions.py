"""knowledgeSourceStatus and notionSyncStatus over a real socket (graphql-transport-ws):
each follows its row to the end; another organization's or person's id is NOT_FOUND."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from models.contacts import Contact
from tests.conftest import register
from tests.credentials.test_credentials import member_token, tenant_id_of
from tests.knowledge.conftest import Gateway, add, upload


async def follow(gateway: Gateway, token: str, query: str, gid: str) -> list[dict[str, Any]]:
    """Every `next` payload until `complete`, or the error list."""
    ws_url = gateway.url.replace("http", "ws") + "/graphql"
    protocols: Any = ["graphql-transport-ws"]
    async with websockets.connect(ws_url, subprotocols=protocols) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"authorization": f"Bearer {token}"}}))  # fmt: skip
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        payload = {"query": query, "variables": {"id": gid}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        seen: list[dict[str, Any]] = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if message["type"] == "complete":
                return seen
            if message["type"] == "error":
                return [{"errors": message["payload"]}]
            assert message["type"] == "next", message
            if message["payload"].get("errors"):
                return [{"errors": message["payload"]["errors"]}]
            seen.append(message["payload"]["data"])


SOURCE_STATUS = "subscription($id: ID!) { knowledgeSourceStatus(id: $id) { status chunkCount } }"
SYNC_STATUS = "subscription($id: ID!) { notionSyncStatus(id: $id) { status total created } }"


async def test_a_source_is_followed_until_ready(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    file_id = await upload(gateway.client, owner.token, "n.md", b"# A\n\nThe door code is 4711.")
    source = await add(gateway.client, owner.token, fileId=file_id)
    seen = await follow(gateway, owner.token, SOURCE_STATUS, source["id"])
    statuses = [s["knowledgeSourceStatus"]["status"] for s in seen]
    assert statuses[-1] == "READY" and set(statuses) <= {"PENDING", "INDEXING", "READY"}
    assert seen[-1]["knowledgeSourceStatus"]["chunkCount"] == 1
    other = await register(gateway.client, org="Other")
    [refused] = await follow(gateway, other.token, SOURCE_STATUS, source["id"])
    assert refused["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_a_sync_is_followed_until_it_settles(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    assert "errors" not in await gateway.connect(owner)
    await Contact.bulk_create([
        Contact(tenant_id=tenant_id_of(owner), name=f"Person {i}") for i in range(25)
    ])  # fmt: skip
    sync = await gateway.sync(owner)
    seen = await follow(gateway, owner.token, SYNC_STATUS, sync["id"])
    last = seen[-1]["notionSyncStatus"]
    assert last == {"status": "SUCCEEDED", "total": 25, "created": 25}
    created = [s["notionSyncStatus"]["created"] for s in seen]
    assert created == sorted(created)  # counts only move forward
    support, _ = await member_token(gateway.settings, owner, "SUPPORT")
    [refused] = await follow(gateway, support, SYNC_STATUS, sync["id"])
    assert refused["errors"][0]["extensions"]["code"] == "NOT_FOUND"
