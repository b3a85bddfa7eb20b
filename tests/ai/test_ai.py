"""AI completions end to end: a real gateway (uvicorn), GraphQL over HTTP and over a real
WebSocket (graphql-transport-ws), the real `openai` SDK inside the gateway, and the
OpenAI sandbox the gateway itself serves at /sandbox/openai."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI

from gateway.app import create_app
from models.ai import AiUsage, ChatMessage, MessageStatus
from models.tasks import Task
from models.tenants import Tenant
from schema.relay import decode_id
from tests.conftest import (
    error_codes,
    eventually,
    free_port,
    gql,
    make_settings,
    register,
    running_server,
)

STREAM = """
subscription($input: CreateChatCompletionInput!) {
  chatCompletion(input: $input) {
    delta index finishReason conversationId messageId
    usage { promptTokens completionTokens totalTokens estimated cost }
  }
}"""

COMPLETE = """
mutation($input: CreateChatCompletionInput!) {
  createChatCompletion(input: $input) {
    conversation { id title model }
    message { id role content status finishReason }
    usage { promptTokens completionTokens totalTokens estimated cost }
  }
}"""

CONVERSATION = """
query($id: ID!) {
  conversation(id: $id) {
    id title
    messages(first: 50) { edges { node { role content status finishReason } } }
  }
}"""


@contextlib.asynccontextmanager
async def gateway(store: Any, **overrides: Any) -> AsyncIterator[str]:
    port = free_port()
    settings = make_settings(
        database_url=store.url, public_url=f"http://127.0.0.1:{port}", **overrides
    )
    app = create_app(settings, configure_logs=False)
    async with running_server(app, port) as url:
        yield url


def prompt(text: str | None = None) -> list[dict[str, str]]:
    return [{"role": "USER", "content": text or f"Tell me about {uuid.uuid4().hex}"}]


def reservation(messages: list[dict[str, str]], max_tokens: int) -> int:
    """The tokens a completion of `messages` holds in the quota while it runs."""
    from resolvers.ai import estimate_prompt_tokens

    return estimate_prompt_tokens([{"content": m["content"]} for m in messages]) + max_tokens


async def expected_text(server: str, content: str, model: str = "gpt-4o-mini") -> str:
    """What the sandbox answers for this prompt, asked directly with the SDK."""
    client = AsyncOpenAI(api_key="sk-direct", base_url=f"{server}/sandbox/openai/v1")
    result = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}]
    )
    await client.close()
    return result.choices[0].message.content


async def sandbox(http: httpx.AsyncClient, path: str, body: Any = None, method: str = "POST"):
    response = await http.request(method, f"/sandbox/openai/_sandbox/{path}", json=body)
    assert response.status_code < 300, response.text
    return response.json()


async def completions_seen(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    data = await sandbox(http, "requests", method="GET")
    return [r for r in data["requests"] if r["path"].endswith("/chat/completions")]


class Subscription:
    """One graphql-transport-ws connection running one subscription."""

    def __init__(self, url: str, token: str, variables: dict[str, Any]) -> None:
        self.url = url.replace("http://", "ws://") + "/graphql"
        self.token = token
        self.variables = variables
        self.ws: Any = None

    async def __aenter__(self) -> Subscription:
        self.ws = await websockets.connect(self.url, subprotocols=["graphql-transport-ws"])
        await self.ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {self.token}"}}
            )
        )
        ack = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        await self.ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": STREAM, "variables": self.variables},
                }
            )
        )
        return self

    async def next(self) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), 20))

    async def all(self) -> list[dict[str, Any]]:
        messages = []
        while True:
            message = await self.next()
            messages.append(message)
            if message["type"] in ("complete", "error"):
                return messages

    async def __aexit__(self, *exc: Any) -> None:
        await self.ws.close()


def chunks(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        m["payload"]["data"]["chatCompletion"]
        for m in messages
        if m["type"] == "next" and m["payload"].get("data")
    ]


async def conversation(http, token, conversation_id):
    body = await gql(http, CONVERSATION, {"id": conversation_id}, token=token)
    assert "errors" not in body, body
    return body["data"]["conversation"]


# Plain completions and models ---------------------------------------------------------


async def test_models_and_plain_completion_stored_and_billed(server, http):
    owner = await register(http)
    models = await gql(
        http, "{ aiModels { name ownedBy inputPricePerMillion outputPricePerMillion } }",
        token=owner.token,
    )  # fmt: skip
    names = {m["name"]: m for m in models["data"]["aiModels"]}
    assert "gpt-4o-mini" in names
    assert names["gpt-4o-mini"]["inputPricePerMillion"] == "0.15"

    content = f"Summarise {uuid.uuid4().hex}"
    body = await gql(http, COMPLETE, {"input": {"messages": prompt(content)}}, token=owner.token)
    assert "errors" not in body, body
    result = body["data"]["createChatCompletion"]
    assert result["message"]["content"] == await expected_text(server, content)
    assert result["message"]["status"] == "COMPLETE"
    assert result["message"]["finishReason"] == "STOP"
    usage = result["usage"]
    assert usage["completionTokens"] == len(result["message"]["content"].split())
    assert usage["estimated"] is False
    assert float(usage["cost"]) > 0

    stored = await conversation(http, owner.token, result["conversation"]["id"])
    roles = [e["node"]["role"] for e in stored["messages"]["edges"]]
    assert roles == ["USER", "ASSISTANT"]

    # Continuing the conversation sends its history first.
    follow = await gql(
        http,
        COMPLETE,
        {
            "input": {
                "messages": prompt("And then?"),
                "conversationId": result["conversation"]["id"],
            }
        },
        token=owner.token,
    )
    assert "errors" not in follow, follow
    sent = (await completions_seen(http))[-1]["body"]["messages"]
    assert [m["content"] for m in sent] == [content, result["message"]["content"], "And then?"]

    today = dt.date.today().isoformat()
    report = await gql(
        http,
        """query($f: Date!, $t: Date!) { aiUsage(from: $f, to: $t) {
            total { calls totalTokens cost }
            byModel { model usage { calls } }
            byUser { user { email } usage { calls promptTokens } } } }""",
        {"f": today, "t": today},
        token=owner.token,
    )
    assert "errors" not in report, report
    data = report["data"]["aiUsage"]
    assert data["total"]["calls"] == 2
    assert data["byModel"] == [{"model": "gpt-4o-mini", "usage": {"calls": 2}}]
    assert data["byUser"][0]["user"]["email"] == owner.email


async def test_bad_input_is_coded_and_stores_nothing(server, http):
    owner = await register(http)
    empty = await gql(http, COMPLETE, {"input": {"messages": []}}, token=owner.token)
    assert error_codes(empty) == ["BAD_USER_INPUT"]
    assert "messages" in empty["errors"][0]["extensions"]["details"]
    hot = await gql(
        http, COMPLETE, {"input": {"messages": prompt(), "temperature": 7}}, token=owner.token
    )
    assert error_codes(hot) == ["BAD_USER_INPUT"]
    too_long = await gql(
        http,
        COMPLETE,
        {"input": {"messages": prompt("word " * 17000), "model": "gpt-3.5-turbo"}},
        token=owner.token,
    )
    assert error_codes(too_long) == ["BAD_USER_INPUT"]
    assert too_long["errors"][0]["extensions"]["vendorCode"] == "context_length_exceeded"
    listed = await gql(http, "{ conversations { totalCount } }", token=owner.token)
    assert listed["data"]["conversations"]["totalCount"] == 0
    backwards = await gql(
        http, '{ aiUsage(from: "2025-02-01", to: "2025-01-01") { total { calls } } }',
        token=owner.token,
    )  # fmt: skip
    assert error_codes(backwards) == ["BAD_USER_INPUT"]


async def test_conversations_are_private_to_their_owner(server, http):
    alice = await register(http, org="A")
    mallory = await register(http, org="M")
    body = await gql(http, COMPLETE, {"input": {"messages": prompt()}}, token=alice.token)
    conv_id = body["data"]["createChatCompletion"]["conversation"]["id"]
    foreign = await gql(http, CONVERSATION, {"id": conv_id}, token=mallory.token)
    assert error_codes(foreign) == ["NOT_FOUND"]
    reuse = await gql(
        http,
        COMPLETE,
        {"input": {"messages": prompt(), "conversationId": conv_id}},
        token=mallory.token,
    )
    assert error_codes(reuse) == ["NOT_FOUND"]
    node = await gql(
        http, "query($id: ID!) { node(id: $id) { id } }", {"id": conv_id}, token=mallory.token
    )
    assert node["data"]["node"] is None


# Streaming --------------------------------------------------------------------------------


async def test_stream_full_answer_then_stored(server, http):
    owner = await register(http)
    content = f"Stream about {uuid.uuid4().hex}"
    async with Subscription(server, owner.token, {"input": {"messages": prompt(content)}}) as sub:
        messages = await sub.all()
    assert messages[-1]["type"] == "complete"
    got = chunks(messages)
    assert len(got) >= 2
    text = "".join(c["delta"] for c in got)
    assert text == await expected_text(server, content)
    assert [c["index"] for c in got] == list(range(len(got)))
    assert all(c["usage"] is None and c["finishReason"] is None for c in got[:-1])
    last = got[-1]
    assert last["finishReason"] == "STOP"
    assert last["usage"]["estimated"] is False
    assert last["usage"]["completionTokens"] == len(text.split())
    assert len({c["conversationId"] for c in got}) == 1

    stored = await conversation(http, owner.token, last["conversationId"])
    answer = stored["messages"]["edges"][-1]["node"]
    assert answer == {
        "role": "ASSISTANT",
        "content": text,
        "status": "COMPLETE",
        "finishReason": "STOP",
    }


async def test_vendor_rate_limit_mid_stream_is_a_coded_error(server, http):
    owner = await register(http)
    marker = uuid.uuid4().hex
    await sandbox(
        http, "stream", {"kind": "rate_limit", "after_chunks": 3, "prompt_contains": marker}
    )
    async with Subscription(server, owner.token, {"input": {"messages": prompt(marker)}}) as sub:
        messages = await sub.all()
    errors = [m for m in messages if m["type"] == "next" and m["payload"].get("errors")]
    assert len(errors) == 1, messages
    error = errors[0]["payload"]["errors"][0]
    assert error["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert error["extensions"]["vendorCode"] == "rate_limit_exceeded"
    assert error["extensions"]["provider"] == "openai"
    assert messages[-1]["type"] == "complete"  # the socket stays up; the stream ends cleanly
    text = "".join(c["delta"] for c in chunks(messages))
    assert len(text.split()) == 3

    conv_id = chunks(messages)[0]["conversationId"]
    answer = (await conversation(http, owner.token, conv_id))["messages"]["edges"][-1]["node"]
    assert answer["status"] == "FAILED"
    assert answer["content"] == text


async def test_quota_exceeded_before_any_upstream_call(server, http):
    owner = await register(http)
    tenant_id = decode_id(owner.org_id, "Organization")
    await Tenant.filter(id=tenant_id).update(ai_monthly_token_quota=0)
    before = len(await completions_seen(http))
    plain = await gql(http, COMPLETE, {"input": {"messages": prompt()}}, token=owner.token)
    assert error_codes(plain) == ["QUOTA_EXCEEDED"]
    async with Subscription(server, owner.token, {"input": {"messages": prompt()}}) as sub:
        messages = await sub.all()
    codes = [
        e["extensions"]["code"] for m in messages if m["type"] == "next"
        for e in m["payload"].get("errors", [])
    ]  # fmt: skip
    assert codes == ["QUOTA_EXCEEDED"]
    assert len(await completions_seen(http)) == before
    listed = await gql(http, "{ conversations { totalCount } }", token=owner.token)
    assert listed["data"]["conversations"]["totalCount"] == 0

    # Under a positive quota, usage counts against it until it is reached: a completion
    # needs room for its prompt and all the output it may have (here maxTokens).
    held = reservation(prompt(), max_tokens=5)
    await Tenant.filter(id=tenant_id).update(ai_monthly_token_quota=held)
    small = {"messages": prompt(), "maxTokens": 5}
    first = await gql(http, COMPLETE, {"input": small}, token=owner.token)
    assert "errors" not in first
    second = await gql(http, COMPLETE, {"input": small}, token=owner.token)
    assert error_codes(second) == ["QUOTA_EXCEEDED"]
    assert second["errors"][0]["extensions"]["requested"] == held
    # Without maxTokens a completion needs room for AI_MAX_OUTPUT_TOKENS.
    await Tenant.filter(id=tenant_id).update(ai_monthly_token_quota=1000)
    unbounded = await gql(http, COMPLETE, {"input": {"messages": prompt()}}, token=owner.token)
    assert error_codes(unbounded) == ["QUOTA_EXCEEDED"]
    assert "maxTokens" in unbounded["errors"][0]["message"]


async def test_client_disconnect_closes_upstream_and_bills_only_received(server, http):
    owner = await register(http)
    marker = uuid.uuid4().hex
    await sandbox(http, "stream", {"tokens_per_second": 20})
    try:
        async with Subscription(
            server, owner.token, {"input": {"messages": prompt(marker)}}
        ) as sub:
            first = await sub.next()
            second = await sub.next()
        received = "".join(c["delta"] for c in chunks([first, second]))
        conv_id = chunks([first])[0]["conversationId"]
    finally:
        await sandbox(http, "stream", method="DELETE")

    async def upstream_gone():
        mine = [r for r in await completions_seen(http) if marker in json.dumps(r["body"])]
        return mine and mine[-1].get("disconnected_at") and mine[-1]

    upstream = await eventually(upstream_gone, "the sandbox to see the disconnect")
    assert upstream["finished_at"] is None  # it never got to the end

    async def interrupted():
        answer = (await conversation(http, owner.token, conv_id))["messages"]["edges"][-1]["node"]
        return answer["status"] == "INTERRUPTED" and answer

    answer = await eventually(interrupted, "the partial answer to be stored")
    assert answer["content"].startswith(received)
    full = await expected_text(server, marker_prompt(marker))
    assert len(answer["content"]) < len(full)
    assert full.startswith(answer["content"])

    usage = await AiUsage.filter(conversation_id=decode_id(conv_id, "Conversation")).first()
    assert usage.outcome == "INTERRUPTED"
    assert usage.estimated is True
    assert usage.completion_tokens == len(answer["content"].split())
    assert usage.completion_tokens <= upstream["chunks_sent"]
    assert usage.completion_tokens < len(full.split())


def marker_prompt(marker: str) -> str:
    return prompt(marker)[0]["content"]


async def test_two_tenants_stream_at_once_without_crossing(server, http):
    one = await register(http, org="One")
    two = await register(http, org="Two")
    await sandbox(http, "stream", {"tokens_per_second": 200})
    try:
        contents = [f"Tenant one {uuid.uuid4().hex}", f"Tenant two {uuid.uuid4().hex}"]

        async def run(token: str, content: str) -> list[dict[str, Any]]:
            async with Subscription(server, token, {"input": {"messages": prompt(content)}}) as s:
                return await s.all()

        results = await asyncio.gather(run(one.token, contents[0]), run(two.token, contents[1]))
    finally:
        await sandbox(http, "stream", method="DELETE")
    for account, content, messages in zip((one, two), contents, results, strict=True):
        got = chunks(messages)
        assert "".join(c["delta"] for c in got) == await expected_text(server, content)
        conv = await conversation(http, account.token, got[0]["conversationId"])
        assert conv["messages"]["edges"][0]["node"]["content"] == content
    other = await gql(
        http, CONVERSATION, {"id": chunks(results[0])[0]["conversationId"]}, token=two.token
    )
    assert error_codes(other) == ["NOT_FOUND"]


# Credentials --------------------------------------------------------------------------------


async def test_invalid_key_is_a_coded_error_and_never_echoed(store):
    key = "sk-invalid-" + uuid.uuid4().hex
    port = free_port()
    async with _gateway_on(store, port, key) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            owner = await register(http)
            body = await gql(http, COMPLETE, {"input": {"messages": prompt()}}, token=owner.token)
            assert error_codes(body) == ["UPSTREAM_UNAVAILABLE"]
            assert body["errors"][0]["extensions"]["vendorCode"] == "invalid_api_key"
            assert key not in json.dumps(body) and key[-4:] not in json.dumps(body)
            async with Subscription(url, owner.token, {"input": {"messages": prompt()}}) as sub:
                messages = await sub.all()
            errors = [e for m in messages if m["type"] == "next" for e in m["payload"]["errors"]]
            assert [e["extensions"]["code"] for e in errors] == ["UPSTREAM_UNAVAILABLE"]
            assert key not in json.dumps(messages)
            # The key was the system key, and the sandbox saw it (as a digest only).
            seen = await completions_seen(http)
            assert seen and all(r["status"] == 401 for r in seen)
            listed = await gql(http, "{ conversations { totalCount } }", token=owner.token)
            assert listed["data"]["conversations"]["totalCount"] == 0
            usage = await AiUsage.filter(credential_source="SYSTEM", error_code="invalid_api_key")
            assert usage and all(u.total_tokens == 0 for u in usage)


@contextlib.asynccontextmanager
async def _gateway_on(store: Any, port: int, key: str) -> AsyncIterator[str]:
    settings = make_settings(
        database_url=store.url,
        public_url=f"http://127.0.0.1:{port}",
        openai_api_key=key,
        openai_base_url=f"http://127.0.0.1:{port}/sandbox/openai/v1",
    )
    app = create_app(settings, configure_logs=False)
    async with running_server(app, port) as url:
        yield url


async def test_tenant_key_is_used_before_the_sandbox_key(server, http):
    owner = await register(http)
    key = "sk-tenant-" + uuid.uuid4().hex
    saved = await gql(
        http,
        """mutation($i: SetCredentialInput!) { setTenantCredential(input: $i) { verified } }""",
        {
            "i": {
                "provider": "OPENAI",
                "secrets": {"apiKey": key, "baseUrl": f"{server}/sandbox/openai/v1"},
            }
        },
        token=owner.token,
    )
    assert "errors" not in saved, saved
    assert saved["data"]["setTenantCredential"]["verified"] is True
    body = await gql(http, COMPLETE, {"input": {"messages": prompt()}}, token=owner.token)
    assert "errors" not in body, body
    import hashlib

    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    last = (await completions_seen(http))[-1]
    assert last["headers"]["authorization"] == f"Bearer [sha256:{digest}]"
    usage = (
        await AiUsage.filter(tenant_id=decode_id(owner.org_id, "Organization"))
        .order_by("-id")
        .first()
    )
    assert usage.credential_source == "TENANT"

    refused = await gql(
        http,
        """mutation($i: SetCredentialInput!) { setTenantCredential(input: $i) { verified } }""",
        {
            "i": {
                "provider": "OPENAI",
                "secrets": {
                    "apiKey": "sk-invalid-x1234567890",
                    "baseUrl": f"{server}/sandbox/openai/v1",
                },
            }
        },
        token=owner.token,
    )
    assert error_codes(refused) == ["BAD_USER_INPUT"]


SET_TENANT_KEY = (
    """mutation($i: SetCredentialInput!) { setTenantCredential(input: $i) { verified } }"""
)
REMOVE_TENANT_KEY = """mutation($i: RemoveCredentialInput!) {
  removeTenantCredential(input: $i) { provider } }"""


async def _source_of_a_completion(http: httpx.AsyncClient, owner: Any) -> str:
    body = await gql(http, COMPLETE, {"input": {"messages": prompt()}}, token=owner.token)
    assert "errors" not in body, body
    tenant_id = decode_id(owner.org_id, "Organization")
    usage = await AiUsage.filter(tenant_id=tenant_id).order_by("-id").first()
    return usage.credential_source


@pytest.mark.parametrize("ttl", [60.0, 0.0])
async def test_credential_cache_drops_local_writes_at_once(store, ttl):
    """Resolved credentials answer from memory for CREDENTIAL_CACHE_SECONDS: a key set or
    removed through this process applies to the next call; a change this process did not
    make (another process: here, the row deleted behind its back) within the TTL."""
    from models.credentials import Credential

    async with (
        gateway(store, credential_cache_seconds=ttl) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        owner = await register(http)
        assert await _source_of_a_completion(http, owner) == "SANDBOX"
        secrets = {"apiKey": "sk-tenant-" + uuid.uuid4().hex, "baseUrl": f"{url}/sandbox/openai/v1"}
        saved = await gql(
            http,
            SET_TENANT_KEY,
            {"i": {"provider": "OPENAI", "secrets": secrets}},
            token=owner.token,
        )
        assert "errors" not in saved, saved
        assert await _source_of_a_completion(http, owner) == "TENANT"
        removed = await gql(
            http, REMOVE_TENANT_KEY, {"i": {"provider": "OPENAI"}}, token=owner.token
        )
        assert "errors" not in removed, removed
        assert await _source_of_a_completion(http, owner) == "SANDBOX"

        await gql(
            http,
            SET_TENANT_KEY,
            {"i": {"provider": "OPENAI", "secrets": secrets}},
            token=owner.token,
        )
        assert await _source_of_a_completion(http, owner) == "TENANT"
        await Credential.filter(tenant_id=decode_id(owner.org_id, "Organization")).delete()
        # Cached (60 s, far longer than this test), or read afresh for every request (0).
        assert await _source_of_a_completion(http, owner) == ("TENANT" if ttl else "SANDBOX")


# Task summary -------------------------------------------------------------------------------


async def test_task_summary_goes_through_the_same_path(server, http):
    owner = await register(http)
    me = await gql(http, "{ me { user { id } } }", token=owner.token)
    user_id = decode_id(me["data"]["me"]["user"]["id"], "User")
    tenant_id = decode_id(owner.org_id, "Organization")
    day = dt.date(2030, 5, 17)
    due = dt.datetime(2030, 5, 17, 9, 30, tzinfo=dt.UTC)
    await Task.create(
        tenant_id=tenant_id, title="Call Globex about renewal", assignee_id=user_id, due_at=due
    )
    await Task.create(
        tenant_id=tenant_id,
        title="Other day",
        assignee_id=user_id,
        due_at=due + dt.timedelta(days=1),
    )
    body = await gql(
        http,
        """mutation($i: GenerateTaskSummaryInput!) { generateTaskSummary(input: $i) {
            conversation { title } message { content status } usage { totalTokens } } }""",
        {"i": {"date": day.isoformat()}},
        token=owner.token,
    )
    assert "errors" not in body, body
    result = body["data"]["generateTaskSummary"]
    assert result["conversation"]["title"] == "Tasks for 2030-05-17"
    assert result["message"]["status"] == "COMPLETE" and result["message"]["content"]
    sent = json.dumps((await completions_seen(http))[-1]["body"]["messages"])
    assert "Call Globex about renewal" in sent
    assert "Other day" not in sent
    stored = await ChatMessage.filter(tenant_id=tenant_id, status=MessageStatus.COMPLETE).count()
    assert stored == 3  # system prompt, task list, answer


# Group commit -------------------------------------------------------------------------------


async def test_group_commit_batches_what_queues_and_fails_rows_alone():
    from resolvers.group_commit import GroupCommit

    batches: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0)
        if 13 in items:
            raise ValueError("bad row")
        return [i * 10 for i in items]

    writer: GroupCommit[int, int] = GroupCommit(write, parallel=1)
    first = asyncio.ensure_future(writer(1))
    while not batches:  # the first write is on its way
        await asyncio.sleep(0)
    results = [
        await first,
        *await asyncio.gather(*(writer(i) for i in (2, 13, 4)), return_exceptions=True),
    ]
    assert results[:2] == [10, 20] and results[3] == 40
    assert isinstance(results[2], ValueError)
    # The first write went alone; the three queued behind it went together, failed, and
    # were written again one by one.
    assert batches == [[1], [2, 13, 4], [2], [13], [4]]
    assert not writer.drains


async def test_answers_and_bills_written_together(store):
    from models.ai import AiUsage, Conversation, MessageRole, UsageOutcome
    from resolvers.ai.ledger import _write_bills

    tenant = await Tenant.create(name="Group", slug=f"group-{uuid.uuid4().hex[:8]}")
    conversation = await Conversation.create(tenant_id=tenant.id, title="t", model="m")
    answers = [
        await ChatMessage.create(
            tenant_id=tenant.id,
            conversation_id=conversation.id,
            role=MessageRole.ASSISTANT,
            status=MessageStatus.STREAMING,
        )
        for _ in range(3)
    ]
    for i, answer in enumerate(answers):
        answer.content, answer.status, answer.finish_reason = (
            f"answer {i}",
            MessageStatus.COMPLETE,
            "stop",
        )
    rows = [
        AiUsage(
            tenant_id=tenant.id,
            conversation_id=conversation.id,
            operation="chat_stream",
            model="m",
            credential_source="SANDBOX",
            prompt_tokens=i,
            completion_tokens=1,
            total_tokens=i + 1,
            outcome=UsageOutcome.COMPLETE,
        )
        for i in range(3)
    ]
    await _write_bills(
        [(a, r, None) for a, r in zip(answers, rows, strict=True)] + [(None, rows[0].clone(), None)]
    )
    stored = await ChatMessage.filter(conversation_id=conversation.id).order_by("id")
    assert [(m.content, m.status, m.finish_reason) for m in stored] == [
        (f"answer {i}", MessageStatus.COMPLETE, "stop") for i in range(3)
    ]
    assert await AiUsage.filter(tenant_id=tenant.id).count() == 4


# Quota under concurrency ----------------------------------------------------------------------


async def quota_books(tenant_id: int) -> tuple[int, int, int, int]:
    """(ledger tokens, the month's `used`, its `reserved`, reservation rows) for a tenant."""
    from models.ai import AiQuotaMonth, AiReservation

    ledger = sum(u.total_tokens for u in await AiUsage.filter(tenant_id=tenant_id))
    month = await AiQuotaMonth.filter(tenant_id=tenant_id).first()
    held = await AiReservation.filter(tenant_id=tenant_id).count()
    if month is None:
        return ledger, 0, 0, held
    return ledger, month.used, month.reserved, held


QUOTA = 100
MAX_TOKENS = 10


async def test_concurrent_completions_never_pass_the_quota(server, http):
    """Twenty-four completions at once (plain, then streamed), each able to use about a
    quarter of the quota: the ones that ran used no more than the quota, the others were
    refused with QUOTA_EXCEEDED before reaching the vendor, and nothing stays reserved."""
    owner = await register(http)
    tenant_id = decode_id(owner.org_id, "Organization")
    await Tenant.filter(id=tenant_id).update(ai_monthly_token_quota=QUOTA)
    asks = [prompt(f"Question {i} {uuid.uuid4().hex}") for i in range(24)]
    assert QUOTA // 5 < reservation(asks[0], MAX_TOKENS) <= QUOTA // 3
    before = len(await completions_seen(http))

    plain = await asyncio.gather(
        *(
            gql(
                http,
                COMPLETE,
                {"input": {"messages": a, "maxTokens": MAX_TOKENS}},
                token=owner.token,
            )
            for a in asks
        )
    )
    ran = [b for b in plain if "errors" not in b]
    refused = [b for b in plain if "errors" in b]
    assert ran and refused
    assert all(error_codes(b) == ["QUOTA_EXCEEDED"] for b in refused)
    used = sum(b["data"]["createChatCompletion"]["usage"]["totalTokens"] for b in ran)
    assert used <= QUOTA
    assert len(await completions_seen(http)) - before == len(ran)  # refused: never sent
    assert await quota_books(tenant_id) == (used, used, 0, 0)

    # The same tenant, a fresh month's worth, through the subscription.
    await AiUsage.filter(tenant_id=tenant_id).delete()
    from models.ai import AiQuotaMonth

    await AiQuotaMonth.filter(tenant_id=tenant_id).update(used=0)

    async def stream(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
        variables = {"input": {"messages": messages, "maxTokens": MAX_TOKENS}}
        async with Subscription(server, owner.token, variables) as sub:
            return await sub.all()

    streamed = await asyncio.gather(*(stream(a) for a in asks))
    totals, codes = [], []
    for messages in streamed:
        got = chunks(messages)
        if got and got[-1]["usage"]:
            totals.append(got[-1]["usage"]["totalTokens"])
        codes += [
            e["extensions"]["code"] for m in messages if m["type"] == "next"
            for e in m["payload"].get("errors", [])
        ]  # fmt: skip
    assert totals and codes
    assert set(codes) == {"QUOTA_EXCEEDED"}
    assert len(totals) + len(codes) == len(asks)
    assert sum(totals) <= QUOTA
    assert await quota_books(tenant_id) == (sum(totals), sum(totals), 0, 0)


async def test_cancelled_stream_and_failed_call_release_their_reservation(server, http):
    """A subscriber that leaves mid-stream: the part received is billed and the rest of
    the reservation is released. A call the vendor refuses releases all of it."""
    owner = await register(http)
    tenant_id = decode_id(owner.org_id, "Organization")
    messages = prompt()
    held = reservation(messages, 400)
    await Tenant.filter(id=tenant_id).update(ai_monthly_token_quota=held)
    await sandbox(http, "stream", {"tokens_per_second": 20})
    try:
        variables = {"input": {"messages": messages, "maxTokens": 400}}
        async with Subscription(server, owner.token, variables) as sub:
            await sub.next()
            _, _, reserved, rows = await quota_books(tenant_id)
            assert (reserved, rows) == (held, 1)
    finally:
        await sandbox(http, "stream", method="DELETE")

    async def released():
        ledger, used, reserved, rows = await quota_books(tenant_id)
        return ledger and (reserved, rows) == (0, 0) and (ledger, used)

    ledger, used = await eventually(released, "the reservation to be released")
    assert 0 < ledger == used < held
    row = await AiUsage.filter(tenant_id=tenant_id).first()
    assert row.outcome == "INTERRUPTED"

    # The vendor refuses: nothing used, nothing held.
    await Tenant.filter(id=tenant_id).update(ai_monthly_token_quota=used + held)
    await sandbox(http, "faults", {"status": 400, "code": "invalid_request_error", "count": 1})
    refused = await gql(
        http, COMPLETE, {"input": {"messages": messages, "maxTokens": 400}}, token=owner.token
    )
    assert error_codes(refused) == ["BAD_USER_INPUT"]
    assert await quota_books(tenant_id) == (ledger, used, 0, 0)
    # So the whole remaining quota is there for the next completion.
    again = await gql(
        http, COMPLETE, {"input": {"messages": messages, "maxTokens": 400}}, token=owner.token
    )
    assert "errors" not in again, again


async def test_expired_reservation_of_a_dead_process_is_swept(server, http):
    """A process died holding the whole quota: once its reservation expires, the next
    completion that does not fit sweeps it and runs."""
    from models.ai import AiQuotaMonth, AiReservation
    from resolvers.ai_quota import month_of

    owner = await register(http)
    tenant_id = decode_id(owner.org_id, "Organization")
    await Tenant.filter(id=tenant_id).update(ai_monthly_token_quota=100)
    month = month_of()
    await AiQuotaMonth.create(tenant_id=tenant_id, month=month, used=0, reserved=100)
    now = dt.datetime.now(dt.UTC)
    dead = await AiReservation.create(
        tenant_id=tenant_id, month=month, tokens=100, expires_at=now + dt.timedelta(hours=1)
    )
    small = {"messages": prompt(), "maxTokens": 5}
    blocked = await gql(http, COMPLETE, {"input": small}, token=owner.token)
    assert error_codes(blocked) == ["QUOTA_EXCEEDED"]  # not expired yet: still held

    await AiReservation.filter(id=dead.id).update(expires_at=now - dt.timedelta(seconds=1))
    body = await gql(http, COMPLETE, {"input": small}, token=owner.token)
    assert "errors" not in body, body
    used = body["data"]["createChatCompletion"]["usage"]["totalTokens"]
    assert await quota_books(tenant_id) == (used, used, 0, 0)


async def test_reservations_shared_settled_and_swept_on_the_store(store):
    """The quota store alone: wants of one tenant that fit together share one row; those
    that do not fit together are held one by one as far as they fit; a part settled
    after its row was swept releases nothing but still counts its usage; nothing is
    released twice."""
    from tortoise.transactions import in_transaction

    from models.ai import AiQuotaMonth, AiReservation
    from resolvers import ai_quota as quotas

    one = await Tenant.create(name="One", slug=f"one-{uuid.uuid4().hex[:8]}")
    two = await Tenant.create(name="Two", slug=f"two-{uuid.uuid4().hex[:8]}")
    month = quotas.month_of()
    for tenant in (one, two):
        await AiQuotaMonth.create(tenant_id=tenant.id, month=month)

    def want(tenant: Tenant, tokens: int) -> quotas.Want:
        return quotas.Want(tenant.id, month, tokens, default_quota=100)

    async def month_row(tenant: Tenant) -> tuple[int, int]:
        row = await AiQuotaMonth.get(tenant_id=tenant.id, month=month)
        return row.used, row.reserved

    together = await quotas.reserve_batch([want(one, 30), want(two, 60), want(one, 40)])
    assert all(together)
    assert together[0].row_id == together[2].row_id != together[1].row_id
    assert await month_row(one) == (0, 70)
    # 70 + 20 + 20 > 100: not together; one by one, the first fits and the second not.
    apart = await quotas.reserve_batch([want(one, 20), want(one, 20)])
    assert apart[0] is not None and apart[1] is None
    assert await month_row(one) == (0, 90)

    async with in_transaction() as conn:
        await quotas.settle(conn, [(together[0], 25)])  # used 25 of its 30
    assert await month_row(one) == (25, 60)
    assert await AiReservation.filter(id=together[0].row_id).count() == 1  # 40 still held

    # The shared row's process "died": the sweep releases what it still holds (40).
    await AiReservation.filter(id=together[2].row_id).update(
        expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )
    assert await quotas.sweep(one.id) == 1
    assert await month_row(one) == (25, 20)
    async with in_transaction() as conn:
        await quotas.settle(conn, [(together[2], 7), (apart[0], 20)])
    assert await month_row(one) == (52, 0)
    await quotas.release_unbilled(together[1])
    await quotas.release_unbilled(together[1])  # settled once only
    assert await month_row(two) == (0, 0)
    assert await AiReservation.all().count() == 0
