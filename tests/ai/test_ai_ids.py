"""Ids the gateway gives the prompt's rows before they are written (models/ids.py): the
ids a stream names are the ids stored, a client that asks for them at once finds them,
no two allocators (apps, processes) on one store ever hand out the same id, and a
prompt that cannot be stored ends its stream cleanly, billed once, its quota released."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tortoise import Tortoise

from models.ai import AiUsage, ChatMessage, Conversation, MessageRole
from models.ids import IdBlock
from models.tenants import Tenant
from schema.relay import decode_id
from tests.ai.test_ai import (
    CONVERSATION,
    Subscription,
    chunks,
    gateway,
    prompt,
    quota_books,
)
from tests.conftest import error_codes, eventually, gql, register

ROOT = Path(__file__).resolve().parents[2]


MESSAGE = """query($id: ID!) { node(id: $id) { ... on ChatMessage { id role content status } } }"""


@contextlib.asynccontextmanager
async def prompt_rows_trigger(store: Any, marker: str, *, fail: bool) -> AsyncIterator[None]:
    """The store itself slows down (and, with `fail`, then refuses) the insert of any chat
    message containing `marker`: a slow or failing store, not a patched gateway."""
    conn = Tortoise.get_connection("default")
    if store.kind == "postgres":
        ending = "RAISE EXCEPTION 'refused by the test';" if fail else "RETURN NEW;"
        await conn.execute_script(
            "CREATE OR REPLACE FUNCTION slow_prompt() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.content LIKE '%{marker}%' THEN PERFORM pg_sleep(0.5); {ending} END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql; "
            "CREATE TRIGGER slow_prompt BEFORE INSERT ON ai_messages "
            "FOR EACH ROW EXECUTE FUNCTION slow_prompt();"
        )
    else:
        # SQLite cannot sleep (nor use WITH in a trigger): counting the pairs of a
        # 3,000-row table takes a while instead.
        await conn.execute_script(
            "CREATE TABLE IF NOT EXISTS slow_rows (n INTEGER); DELETE FROM slow_rows;"
        )
        await conn.execute_many("INSERT INTO slow_rows (n) VALUES (?)", [[i] for i in range(3000)])
        busy = "(SELECT count(*) FROM slow_rows a, slow_rows b)"
        action = (
            f"SELECT RAISE(ABORT, 'refused by the test') WHERE {busy} >= 0"
            if fail
            else f"SELECT {busy}"
        )
        await conn.execute_script(
            "CREATE TRIGGER slow_prompt BEFORE INSERT ON ai_messages "
            f"WHEN NEW.content LIKE '%{marker}%' BEGIN {action}; END;"
        )
    try:
        yield
    finally:
        await conn.execute_script(
            "DROP TRIGGER IF EXISTS slow_prompt ON ai_messages; DROP FUNCTION IF EXISTS "
            "slow_prompt();"
            if store.kind == "postgres"
            else "DROP TRIGGER IF EXISTS slow_prompt; DROP TABLE IF EXISTS slow_rows;"
        )


async def test_ids_named_before_storage_are_found_at_once_and_are_the_ids_stored(
    store, server, http
):
    """The first delta names the conversation and the answer while their write is still
    held up by the store; asking for the conversation at once finds it (the read waits
    for the write), and the answer stored under the named id is the text streamed."""
    owner = await register(http)
    marker = uuid.uuid4().hex
    async with prompt_rows_trigger(store, marker, fail=False):
        async with Subscription(
            server, owner.token, {"input": {"messages": prompt(marker)}}
        ) as sub:
            first = chunks([await sub.next()])[0]
            assert first["delta"]
            found = await gql(
                http, CONVERSATION, {"id": first["conversationId"]}, token=owner.token
            )
            assert "errors" not in found, found
            assert found["data"]["conversation"]["id"] == first["conversationId"]
            rest = await sub.all()
    streamed = chunks([{"type": "next", "payload": {"data": {"chatCompletion": first}}}, *rest])
    text = "".join(c["delta"] for c in streamed)
    assert {(c["conversationId"], c["messageId"]) for c in streamed} == {
        (first["conversationId"], first["messageId"])
    }
    answer = (await gql(http, MESSAGE, {"id": first["messageId"]}, token=owner.token))["data"]
    assert answer["node"] == {
        "id": first["messageId"],
        "role": "ASSISTANT",
        "content": text,
        "status": "COMPLETE",
    }
    conversation_id = decode_id(first["conversationId"], "Conversation")
    rows = await ChatMessage.filter(conversation_id=conversation_id).order_by("id")
    assert [r.role for r in rows] == [MessageRole.USER, MessageRole.ASSISTANT]
    assert rows[-1].id == decode_id(first["messageId"], "ChatMessage")

    # The next turn's rows sort after the first turn's, whatever the process's stock.
    variables = {"input": {"messages": prompt(), "conversationId": first["conversationId"]}}
    async with Subscription(server, owner.token, variables) as sub:
        again = chunks(await sub.all())
    assert again[0]["conversationId"] == first["conversationId"]
    rows = await ChatMessage.filter(conversation_id=conversation_id).order_by("id")
    assert [r.role for r in rows] == [MessageRole.USER, MessageRole.ASSISTANT] * 2
    assert rows[-1].id == decode_id(again[0]["messageId"], "ChatMessage")
    # Another member asking for the id finds nothing, pending write or not.
    other = await register(http, org="Other")
    foreign = await gql(http, CONVERSATION, {"id": first["conversationId"]}, token=other.token)
    assert error_codes(foreign) == ["NOT_FOUND"]


async def test_a_store_failure_after_the_first_delta_ends_the_stream_and_releases_the_quota(
    store, server, http
):
    owner = await register(http)
    tenant_id = decode_id(owner.org_id, "Organization")
    await Tenant.filter(id=tenant_id).update(ai_monthly_token_quota=100_000)
    marker = uuid.uuid4().hex
    async with prompt_rows_trigger(store, marker, fail=True):
        async with Subscription(
            server, owner.token, {"input": {"messages": prompt(marker), "maxTokens": 200}}
        ) as sub:
            messages = await sub.all()
    assert messages[0]["type"] == "next" and chunks(messages[:1])[0]["delta"]
    errors = [m for m in messages if m["type"] == "next" and m["payload"].get("errors")]
    assert len(errors) == 1, messages
    assert errors[0]["payload"]["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert messages[-1]["type"] == "complete"  # the stream ends cleanly, the socket stays
    named = chunks(messages)[0]
    conversation_id = decode_id(named["conversationId"], "Conversation")

    # Nothing half-written: no conversation, no message; one bill for what was received.
    assert not await Conversation.filter(id=conversation_id).exists()
    assert not await ChatMessage.filter(conversation_id=conversation_id).exists()
    missing = await gql(http, CONVERSATION, {"id": named["conversationId"]}, token=owner.token)
    assert error_codes(missing) == ["NOT_FOUND"]

    async def settled():
        ledger, used, reserved, rows = await quota_books(tenant_id)
        return (reserved, rows) == (0, 0) and (ledger, used)

    ledger, used = await eventually(settled, "the reservation to be settled")
    bills = await AiUsage.filter(tenant_id=tenant_id)
    assert [(b.outcome, b.error_code, b.conversation_id) for b in bills] == [
        ("FAILED", "store_failed", None)
    ]
    assert ledger == used == bills[0].total_tokens > 0

    # The store is well again: the next stream runs and is stored.
    async with Subscription(server, owner.token, {"input": {"messages": prompt()}}) as sub:
        fine = await sub.all()
    assert fine[-1]["type"] == "complete" and chunks(fine)[-1]["usage"]


async def test_two_apps_on_one_store_name_rows_apart(store):
    """Two gateways (each its own stocks) on one store, streaming at once: every
    conversation and message id is distinct and stored under the tenant that streamed."""
    async with gateway(store) as one, gateway(store) as two:
        async with httpx.AsyncClient(base_url=one, timeout=30) as client:
            owner = await register(client)

        async def stream(url: str) -> dict[str, Any]:
            async with Subscription(url, owner.token, {"input": {"messages": prompt()}}) as s:
                return chunks(await s.all())[-1]

        lasts = await asyncio.gather(*(stream(url) for url in [one, two] * 6))
    conversations = [decode_id(c["conversationId"], "Conversation") for c in lasts]
    answers = [decode_id(c["messageId"], "ChatMessage") for c in lasts]
    assert len(set(conversations)) == len(set(answers)) == 12
    tenant_id = decode_id(owner.org_id, "Organization")
    assert await Conversation.filter(id__in=conversations, tenant_id=tenant_id).count() == 12
    assert await ChatMessage.filter(id__in=answers, content__not="").count() == 12


ALLOCATE = """
import asyncio, json, sys
from kit.settings import load_settings
from models import store as db
from models.ai import ChatMessage
from models.ids import IdBlock

async def main():
    await db.open_store(load_settings(database_url=sys.argv[1], switchboard_env="test"))
    block = IdBlock(ChatMessage, size=7)
    ids = []
    for _ in range(150):
        ids += await block.take(1)
    print(json.dumps(ids))
    await db.close_store()

asyncio.run(main())
"""


async def test_concurrent_allocators_in_processes_and_plain_inserts_never_collide(store):
    """Two other processes and this one take ids of one table at once, in small blocks,
    while rows are also inserted the plain way (the store numbering them): no id is
    handed out twice, and rows inserted under the handed-out ids all go in."""
    tenant = await Tenant.create(name="Ids", slug=f"ids-{uuid.uuid4().hex[:8]}")
    conversation = await Conversation.create(tenant_id=tenant.id, title="t", model="m")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            ALLOCATE,
            store.url,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    here = IdBlock(ChatMessage, size=5)
    mine: list[int] = []
    plain: list[int] = []
    for i in range(60):
        mine += await here.take(2)
        row = await ChatMessage.create(
            tenant_id=tenant.id, conversation_id=conversation.id, role=MessageRole.USER,
            content=f"plain {i}",
        )  # fmt: skip
        plain.append(row.id)
    theirs: list[int] = []
    for proc in procs:
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        theirs += json.loads(out)
    handed = mine + theirs
    assert len(handed) == 120 + 300
    assert len(set(handed)) == len(handed)
    assert not set(handed) & set(plain)
    assert mine == sorted(mine)  # increasing within one allocator
    await ChatMessage.bulk_create(
        [
            ChatMessage(
                id=i,
                tenant_id=tenant.id,
                conversation_id=conversation.id,
                role=MessageRole.USER,
                content="named",
            )
            for i in handed
        ]
    )
    assert await ChatMessage.filter(conversation_id=conversation.id).count() == 60 + 420
    # And the store's own numbering goes on above them.
    after = await ChatMessage.create(
        tenant_id=tenant.id, conversation_id=conversation.id, role=MessageRole.USER, content="x"
    )
    assert after.id > max(handed)


async def test_a_stale_stock_is_dropped_and_ids_stay_above_a_floor(store):
    now = [0.0]
    block = IdBlock(Conversation, size=10, max_age=5, clock=lambda: now[0])
    [first] = await block.take(1)
    # Another allocator (another process) hands out an id above this one's stock; a
    # conversation continued with it here must get ids above it.
    [floor] = await IdBlock(Conversation, size=10).take(1)
    assert floor > first
    [above] = await block.take(1, above=floor)
    assert above > floor
    [later] = await IdBlock(Conversation, size=10).take(1)
    now[0] = 6  # this stock is now older than max_age: dropped, not used
    [fresh] = await block.take(1)
    assert fresh > later > above


async def test_rows_that_cannot_be_named_end_the_stream_before_any_delta(store, server, http):
    """The store refuses to hand out ids (the sequence is at its maximum): the stream
    ends with the error, the prompt's estimate is billed once, the quota is released."""
    if store.kind != "postgres":
        pytest.skip("a sequence's maximum is PostgreSQL's")
    owner = await register(http)
    tenant_id = decode_id(owner.org_id, "Organization")
    conn = Tortoise.get_connection("default")
    # This app's stock is empty yet: its first stream asks the sequence, now at its end.
    rows = await conn.execute_query_dict(
        "SELECT nextval('ai_conversations_id_seq') AS id FROM generate_series(1, 2)"
    )
    top = max(int(r["id"]) for r in rows)
    await conn.execute_script(f"ALTER SEQUENCE ai_conversations_id_seq MAXVALUE {top}")
    try:
        async with Subscription(server, owner.token, {"input": {"messages": prompt()}}) as sub:
            messages = await sub.all()
    finally:
        await conn.execute_script("ALTER SEQUENCE ai_conversations_id_seq NO MAXVALUE")
    assert not chunks(messages)
    errors = [m for m in messages if m["type"] == "next" and m["payload"].get("errors")]
    assert [e["payload"]["errors"][0]["extensions"]["code"] for e in errors] == [
        "INTERNAL_SERVER_ERROR"
    ]
    assert messages[-1]["type"] == "complete"

    async def settled():
        ledger, used, reserved, rows = await quota_books(tenant_id)
        return (reserved, rows) == (0, 0) and ledger and (ledger, used)

    ledger, used = await eventually(settled, "the reservation to be settled")
    bills = await AiUsage.filter(tenant_id=tenant_id)
    assert [(b.outcome, b.error_code, b.conversation_id, b.estimated) for b in bills] == [
        ("FAILED", "store_failed", None, True)
    ]
    assert ledger == used == bills[0].total_tokens
    assert not await Conversation.filter(tenant_id=tenant_id).exists()
