"""Knowledge fixtures: the gateway on a real port (its OpenAI sandbox embeds and answers,
its Notion sandbox serves connected databases), a worker, and a local web server for URL
sources, allowed by the operator setting OUTBOUND_ALLOWED_HOSTS."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import eventually, gql, running_server
from tests.notion.conftest import Gateway, serving

HANDBOOK = """<html><head><title>Support handbook</title><style>.x{color:red}</style>
<script>var secret = "do not index me";</script></head><body>
<h1>Support handbook</h1>
<p>Customers may ask for a refund within 30 days of delivery. Refunds go back to the
original card within five business days.</p>
<p>Our support desk answers chats from 8:00 to 18:00, Monday to Friday.</p>
</body></html>"""


def web_app() -> Starlette:
    async def handbook(request: Request) -> Response:
        return Response(HANDBOOK, media_type="text/html; charset=utf-8")

    async def into_network(request: Request) -> Response:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=302)

    async def huge(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(800):  # 8 MB, no Content-Length
                yield b"<p>" + b"x" * 10_000 + b"</p>"

        return StreamingResponse(body(), media_type="text/html")

    async def image(request: Request) -> Response:
        return Response(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, media_type="image/png")

    async def nul(request: Request) -> Response:
        return Response(b"The backup\x00 runs nightly at 02:00.\x00\x01", media_type="text/plain")

    async def missing(request: Request) -> Response:
        return Response("gone", status_code=404)

    return Starlette(routes=[
        Route("/handbook.html", handbook), Route("/redirect", into_network),
        Route("/huge.html", huge), Route("/image.png", image), Route("/missing", missing),
        Route("/nul.txt", nul),
    ])  # fmt: skip


@pytest.fixture
async def web() -> AsyncIterator[str]:
    async with running_server(web_app()) as url:
        yield url


@pytest.fixture
async def gateway(store: Any, worker: Any) -> AsyncIterator[Gateway]:
    async with serving(store, worker, outbound_allowed_hosts=["127.0.0.1"]) as served:
        yield served


SOURCE_FIELDS = "id kind title url status reason chunkCount"
ADD = (
    "mutation($i: AddKnowledgeSourceInput!) { addKnowledgeSource(input: $i) { source { "
    + SOURCE_FIELDS
    + " } } }"
)
SOURCE = "query($id: ID!) { knowledgeSource(id: $id) { " + SOURCE_FIELDS + " } }"
SEARCH = """query($q: String!, $first: Int) { searchKnowledge(query: $q, first: $first) {
  title url excerpt score chunk { id position text } source { id title kind } } }"""
ASK = """mutation($i: AskKnowledgeBaseInput!) { askKnowledgeBase(input: $i) {
  answer found citations { number hit { title url chunk { id text } source { id } } }
  completion { message { content } } } }"""
REFRESH = """mutation($i: KnowledgeSourceInput!) { refreshKnowledgeSource(input: $i) {
  source { id status } } }"""
REMOVE = """mutation($i: KnowledgeSourceInput!) { removeKnowledgeSource(input: $i) {
  id removedChunks } }"""
UPLOAD = """mutation($input: UploadFileInput!) { uploadFile(input: $input) { file { id
  contentType } } }"""


async def add(client: httpx.AsyncClient, token: str, **source: Any) -> dict[str, Any]:
    body = await gql(client, ADD, {"i": source}, token)
    assert "errors" not in body, body
    return dict(body["data"]["addKnowledgeSource"]["source"])


async def settled(client: httpx.AsyncClient, token: str, gid: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        body = await gql(client, SOURCE, {"id": gid}, token)
        state = body["data"]["knowledgeSource"]
        return state if state["status"] in ("READY", "FAILED") else None

    return await eventually(done, "the source to be indexed", limit=60)


async def upload(client: httpx.AsyncClient, token: str, name: str, data: bytes) -> str:
    operations = {"query": UPLOAD, "variables": {"input": {"file": None, "purpose": "DOCUMENT"}}}
    answer = await client.post(
        "/graphql",
        data={
            "operations": json.dumps(operations),
            "map": json.dumps({"0": ["variables.input.file"]}),
        },
        files={"0": (name, data, "application/octet-stream")},
        headers={"Authorization": f"Bearer {token}", "Apollo-Require-Preflight": "true"},
    )
    body = answer.json()
    assert "errors" not in body, body
    return str(body["data"]["uploadFile"]["file"]["id"])


async def search(client: httpx.AsyncClient, token: str, q: str, first: int = 5) -> list[Any]:
    body = await gql(client, SEARCH, {"q": q, "first": first}, token)
    assert "errors" not in body, body
    return list(body["data"]["searchKnowledge"])


__all__ = ["Gateway"]
