"""`knowledge: true` on completions, plain and streamed: the relevant chunks reach the
model (as the OpenAI sandbox records it) and come back as citations; with nothing
relevant the model is told to say so; the knowledge permission is checked too."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from resolvers.knowledge.search import NOTHING_RELEVANT
from tests.conftest import error_codes, gql, register
from tests.credentials.test_credentials import member_token
from tests.knowledge.conftest import Gateway, add, settled, upload

COMPLETE = """mutation($i: CreateChatCompletionInput!) { createChatCompletion(input: $i) {
  message { content } citations { number title url excerpt sourceId chunkId } } }"""
STREAM = """subscription($i: CreateChatCompletionInput!) { chatCompletion(input: $i) {
  delta finishReason citations { number sourceId } } }"""


def question(text: str, knowledge: bool = True) -> dict[str, Any]:
    return {"i": {"messages": [{"role": "USER", "content": text}], "knowledge": knowledge}}


def sent_to_model(gateway: Gateway) -> list[dict[str, Any]]:
    calls = [r for r in gateway.app.state.services.sandboxes["openai"].recorded
             if r["path"].endswith("/chat/completions")]  # fmt: skip
    return list(calls[-1]["body"]["messages"])


async def test_plain_and_streamed_completions_are_grounded(gateway: Gateway) -> None:
    client = gateway.client
    owner = await register(client)
    doc = b"# Machines\n\nEvery espresso machine carries a two year warranty on its pump."
    source = await add(client, owner.token, fileId=await upload(client, owner.token, "m.md", doc))
    assert (await settled(client, owner.token, source["id"]))["status"] == "READY"

    body = await gql(client, COMPLETE, question("How long is the espresso warranty?"),
                     owner.token)  # fmt: skip
    assert "errors" not in body, body
    [citation] = body["data"]["createChatCompletion"]["citations"]
    assert citation["number"] == 1 and citation["sourceId"] == source["id"]
    assert "<mark>espresso</mark>" in citation["excerpt"]
    system, user = sent_to_model(gateway)
    assert system["role"] == "system" and "[1]" in system["content"]
    assert "two year warranty" in system["content"] and user["role"] == "user"

    body = await gql(client, COMPLETE, question("Who painted the Mona Lisa?"), owner.token)
    assert body["data"]["createChatCompletion"]["citations"] == []
    assert sent_to_model(gateway)[0] == {"role": "system", "content": NOTHING_RELEVANT}
    body = await gql(client, COMPLETE, question("Espresso warranty?", knowledge=False),
                     owner.token)  # fmt: skip
    assert body["data"]["createChatCompletion"]["citations"] == []
    assert [m["role"] for m in sent_to_model(gateway)] == ["user"]  # untouched without it

    ws_url = gateway.url.replace("http", "ws") + "/graphql"
    protocols: Any = ["graphql-transport-ws"]
    async with websockets.connect(ws_url, subprotocols=protocols) as ws:
        init = {"authorization": f"Bearer {owner.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": STREAM, "variables": question("espresso machine warranty")}}))  # fmt: skip
        chunks = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if message["type"] == "complete":
                break
            assert message["type"] == "next", message
            chunks.append(message["payload"]["data"]["chatCompletion"])
    assert all(c["citations"] is None for c in chunks[:-1])
    assert chunks[-1]["finishReason"] and chunks[-1]["citations"] == [
        {"number": 1, "sourceId": source["id"]}
    ]

    accounting, _ = await member_token(gateway.settings, owner, "ACCOUNTING")
    body = await gql(client, COMPLETE, question("Espresso warranty?"), accounting)
    assert error_codes(body) == ["FORBIDDEN"]  # ai:use, but not knowledge:read
    body = await gql(client, COMPLETE, question("Espresso warranty?", knowledge=False), accounting)
    assert "errors" not in body, body
