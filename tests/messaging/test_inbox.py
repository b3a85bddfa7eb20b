"""The support inbox end to end: incoming SMS and WhatsApp posted (signed) by the Twilio
sandbox, filed per organization and contact; replies on the conversation's channel;
assign, close, reopen; inboxUpdates; STOP from inside a conversation; AI drafts."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import websockets
from strawberry import relay

from models.messaging import Message
from schema.relay import decode_id
from tests.conftest import Account, error_codes, eventually, gql, register
from tests.credentials.test_credentials import member_token
from tests.messaging.conftest import SEND_SMS, Gateway, send_sms, status_is, unique_number

SOURCE = """mutation($i: CreateWebhookSourceInput!) { createWebhookSource(input: $i) { url } }"""
CONVERSATIONS = """query($s: InboxConversationStatus, $c: MessageChannel, $a: ID,
  $u: Boolean, $n: Boolean) {
  inboxConversations(first: 50, status: $s, channel: $c, assigneeId: $a, unread: $u,
                     unassigned: $n) {
    edges { node { id channel address status unread lastPreview
      contact { id name phone email } assignee { id } } } } }"""
CONVERSATION = """query($id: ID!) { inboxConversation(id: $id) { id status unread address
  messages(first: 50) { edges { node { direction body status mediaUrls channel kind } } } } }"""
REPLY = """mutation($i: ReplyToConversationInput!) { replyToConversation(input: $i) {
  message { id channel recipient body status } conversation { status } } }"""
ASSIGN = """mutation($i: AssignConversationInput!) { assignConversation(input: $i) {
  conversation { assignee { id } } } }"""
CLOSE = """mutation($i: CloseConversationInput!) { closeConversation(input: $i) {
  conversation { status } } }"""
DRAFT = """mutation($i: DraftReplyInput!) { draftReply(input: $i) {
  text usage { promptTokens completionTokens } } }"""


async def own_source(gw: Gateway, owner: Account) -> str:
    """The organization's own Twilio webhook address (its account's auth token as the
    secret), where the sandbox posts incoming messages from now on."""
    made = await gql(
        gw.client, SOURCE, {"i": {"provider": "twilio", "secret": gw.token}}, owner.token
    )
    assert "errors" not in made, made
    url = str(made["data"]["createWebhookSource"]["url"])
    gw.sandbox.configure(callbacks=f"{gw.url}/webhooks/", inbound=url)
    return url


async def conversations(gw: Gateway, token: str, **filters: Any) -> list[dict[str, Any]]:
    body = await gql(gw.client, CONVERSATIONS, filters, token)
    assert "errors" not in body, body
    return [e["node"] for e in body["data"]["inboxConversations"]["edges"]]


def one_for(gw: Gateway, token: str, address: str, **filters: Any) -> Any:
    async def check() -> dict[str, Any] | None:
        found = [c for c in await conversations(gw, token, **filters) if c["address"] == address]
        return found[0] if found else None

    return check


async def test_an_unknown_number_gets_a_contact_a_conversation_and_an_sms_reply(
    gateway: Gateway,
) -> None:
    owner = await register(gateway.client)
    await own_source(gateway, owner)
    number = unique_number()
    await gateway.inbound(number, "Hi, where is my order?")
    found = await eventually(one_for(gateway, owner.token, number), "the message is filed")
    assert (found["channel"], found["status"], found["unread"]) == ("SMS", "OPEN", 1)
    assert found["contact"]["phone"] == number and found["contact"]["name"] == number
    assert found["lastPreview"] == "Hi, where is my order?"
    opened = await gql(gateway.client, CONVERSATION, {"id": found["id"]}, owner.token)
    thread = opened["data"]["inboxConversation"]
    assert thread["unread"] == 0  # reading it marks it read
    [incoming] = [e["node"] for e in thread["messages"]["edges"]]
    assert (incoming["direction"], incoming["status"]) == ("INBOUND", "RECEIVED")
    support, _ = await member_token(gateway.settings, owner, "SUPPORT")
    reply = await gql(
        gateway.client, REPLY,
        {"i": {"conversationId": found["id"], "body": "It ships today."}}, support,
    )  # fmt: skip
    assert "errors" not in reply, reply
    sent = reply["data"]["replyToConversation"]
    assert sent["message"]["channel"] == "SMS" and sent["conversation"]["status"] == "PENDING"
    await eventually(status_is(gateway, owner, sent["message"]["id"], "DELIVERED"), "delivered")
    [out] = [m for m in gateway.created() if m["To"] == number]
    assert out["Body"] == "It ships today."
    # STOP from the contact: filed in the conversation, and the next reply is refused.
    await gateway.inbound(number, "STOP")
    await eventually(
        one_for(gateway, owner.token, number, s="OPEN"), "STOP reopens the conversation"
    )
    await eventually(lambda: _opted_out(gateway, owner, number), "the STOP is listed")
    refused = await gql(
        gateway.client, REPLY, {"i": {"conversationId": found["id"], "body": "?"}}, support
    )
    assert error_codes(refused) == ["PHONE_OPTED_OUT"], refused
    direct = await gql(gateway.client, SEND_SMS, {"i": {"to": number, "body": "x"}}, owner.token)
    assert error_codes(direct) == ["PHONE_OPTED_OUT"]
    # Still one contact and one conversation for the number.
    assert (
        len([c for c in await conversations(gateway, owner.token) if c["address"] == number]) == 1
    )


async def _opted_out(gw: Gateway, owner: Account, number: str) -> bool:
    from tests.messaging.conftest import opt_outs

    return number in await opt_outs(gw, owner)


async def test_a_reply_to_our_sms_lands_with_the_sender_of_it(gateway: Gateway) -> None:
    """At the system address, an incoming message belongs to the organization that last
    wrote to its sender, and finds that organization's CRM contact by phone."""
    ours, other = await register(gateway.client), await register(gateway.client)
    number = unique_number()
    made = await gql(
        gateway.client,
        """mutation($i: CreateContactInput!) { createContact(input: $i) { contact { id } } }""",
        {"i": {"name": "Ada Lovelace", "phone": number}},
        ours.token,
    )
    assert "errors" not in made, made
    gid = await send_sms(gateway, ours, number, "Your appointment is tomorrow")
    await eventually(status_is(gateway, ours, gid, "DELIVERED"), "delivered")
    await gateway.inbound(number, "Can we move it to Friday?")
    found = await eventually(one_for(gateway, ours.token, number), "filed")
    assert found["contact"]["name"] == "Ada Lovelace"
    assert await conversations(gateway, other.token) == []


async def test_whatsapp_with_media_then_reply_with_media(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    await own_source(gateway, owner)
    number = unique_number()
    await gateway.inbound(number, "Photo of the damage", channel="whatsapp",
                          media=["https://media.example.com/damage.jpg"])  # fmt: skip
    found = await eventually(one_for(gateway, owner.token, number, c="WHATSAPP"), "filed")
    thread = (await gql(gateway.client, CONVERSATION, {"id": found["id"]}, owner.token))["data"]
    [incoming] = [e["node"] for e in thread["inboxConversation"]["messages"]["edges"]]
    assert incoming["mediaUrls"] == ["https://media.example.com/damage.jpg"]
    reply = await gql(gateway.client, REPLY, {"i": {
        "conversationId": found["id"], "body": "Sorry! Label attached.",
        "mediaUrls": ["https://cdn.example.com/label.pdf"]}}, owner.token)  # fmt: skip
    assert "errors" not in reply, reply
    gid = reply["data"]["replyToConversation"]["message"]["id"]
    await eventually(status_is(gateway, owner, gid, "READ"), "read")


async def test_assign_close_reopen_filters_and_roles(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    await own_source(gateway, owner)
    number = unique_number()
    await gateway.inbound(number, "Question one")
    found = await eventually(one_for(gateway, owner.token, number), "filed")
    support, support_id = await member_token(gateway.settings, owner, "SUPPORT")
    user_gid = str(relay.GlobalID("User", str(support_id)))
    assigned = await gql(gateway.client, ASSIGN, {"i": {
        "conversationId": found["id"], "assigneeId": user_gid}}, owner.token)  # fmt: skip
    assert assigned["data"]["assignConversation"]["conversation"]["assignee"]["id"] == user_gid
    mine = await conversations(gateway, support, a=user_gid)
    assert [c["address"] for c in mine] == [number]
    assert number not in [c["address"] for c in await conversations(gateway, support, n=True)]
    # Someone of another organization cannot be assigned.
    stranger = await register(gateway.client)
    foreign = await gql(gateway.client, ASSIGN, {"i": {
        "conversationId": found["id"], "assigneeId": stranger.user_id}}, owner.token)  # fmt: skip
    assert error_codes(foreign) == ["NOT_FOUND"]
    closed = await gql(gateway.client, CLOSE, {"i": {"conversationId": found["id"]}}, support)
    assert closed["data"]["closeConversation"]["conversation"]["status"] == "CLOSED"
    assert number in [c["address"] for c in await conversations(gateway, support, s="CLOSED")]
    await gateway.inbound(number, "Question two")
    reopened = await eventually(one_for(gateway, owner.token, number, s="OPEN"), "reopened")
    assert reopened["unread"] == 2  # nobody opened it since the first
    for role in ("READ_ONLY", "ACCOUNTING"):
        token, _ = await member_token(gateway.settings, owner, role)
        assert error_codes(await gql(gateway.client, CONVERSATIONS, {}, token)) == ["FORBIDDEN"]
        answer = await gql(gateway.client, CLOSE, {"i": {"conversationId": found["id"]}}, token)
        assert error_codes(answer) == ["FORBIDDEN"]
    other = await register(gateway.client)
    assert error_codes(
        await gql(gateway.client, CONVERSATION, {"id": found["id"]}, other.token)
    ) == ["NOT_FOUND"]
    assert await conversations(gateway, other.token) == []


async def test_a_replayed_incoming_message_is_filed_once(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    source = await own_source(gateway, owner)
    number = unique_number()
    sid = await gateway.inbound(number, "Only once")
    await eventually(one_for(gateway, owner.token, number), "filed")
    [posted] = [d for d in gateway.sandbox.callbacks.recorded() if sid in str(d["body"])]
    again = await gateway.client.post(
        source.removeprefix(gateway.url), content=posted["body"], headers=posted["headers"]
    )
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert await Message.filter(provider_sid=sid).count() == 1


async def test_inbox_updates_streams_new_conversations(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    await own_source(gateway, owner)
    number = unique_number()
    ws_url = gateway.url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        auth = {"authorization": f"Bearer {owner.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        query = "subscription { inboxUpdates { address status unread channel } }"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        # The subscription may not listen yet when the first message is filed: another
        # message follows until an update arrives (the first one seen says how many).
        update = None
        for attempt in range(20):
            await gateway.inbound(number, f"Anyone there? ({attempt})")
            try:
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 3))
                    assert message["type"] == "next", message
                    found = message["payload"]["data"]["inboxUpdates"]
                    if found["address"] == number:
                        update = found
                        break
            except TimeoutError:
                continue
            break
        assert update is not None
        assert (update["status"], update["channel"]) == ("OPEN", "SMS")
        assert update["unread"] >= 1


async def test_draft_reply_reads_the_conversation_and_the_crm_record(gateway: Gateway) -> None:
    owner = await register(gateway.client)
    await own_source(gateway, owner)
    number = unique_number()
    await gateway.inbound(number, "My invoice INV-42 is wrong")
    found = await eventually(one_for(gateway, owner.token, number), "filed")
    before = await Message.filter(recipient=number).count()
    openai = gateway.app.state.services.sandboxes["openai"]
    openai.recorded.clear()
    draft = await gql(gateway.client, DRAFT, {"i": {"conversationId": found["id"]}}, owner.token)
    assert "errors" not in draft, draft
    assert draft["data"]["draftReply"]["text"]
    assert draft["data"]["draftReply"]["usage"]["completionTokens"] > 0
    [request] = [r for r in openai.recorded if r["path"].endswith("/chat/completions")]
    prompt = json.dumps(request["body"]["messages"])
    assert "My invoice INV-42 is wrong" in prompt and f"phone: {number}" in prompt
    assert await Message.filter(recipient=number).count() == before  # nothing was sent
    read_only, _ = await member_token(gateway.settings, owner, "READ_ONLY")
    answer = await gql(gateway.client, DRAFT, {"i": {"conversationId": found["id"]}}, read_only)
    assert error_codes(answer) == ["FORBIDDEN"]


async def test_draft_reply_streams_and_respects_the_ai_quota(gateway: Gateway, store: Any) -> None:
    from gateway.app import create_app
    from resolvers import inbox
    from tests.conftest import free_port, make_settings, running_server
    from tests.messaging.conftest import settings_for

    owner = await register(gateway.client)
    tenant_id = int(decode_id(owner.org_id, "Organization"))
    filed = await inbox.file_message(
        tenant_id,
        inbox.Incoming(
            channel=inbox.Channel.SMS, sender=unique_number(), recipient="+15005550006",
            body="Is the shop open on Sunday?", media_urls=[], provider_sid=f"SM{uuid.uuid4().hex}",
        ),
    )  # fmt: skip
    assert filed is not None
    gid = str(relay.GlobalID("InboxConversation", str(filed.conversation_id)))
    ws_url = gateway.url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        auth = {"authorization": f"Bearer {owner.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        query = """subscription($i: DraftReplyInput!) { draftReply(input: $i) {
          delta finishReason usage { completionTokens } } }"""
        await ws.send(json.dumps({"id": "d", "type": "subscribe", "payload": {
            "query": query, "variables": {"i": {"conversationId": gid}}}}))  # fmt: skip
        chunks = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "complete":
                break
            assert message["type"] == "next", message
            chunks.append(message["payload"]["data"]["draftReply"])
    assert "".join(c["delta"] for c in chunks) and chunks[-1]["finishReason"]
    assert chunks[-1]["usage"]["completionTokens"] > 0
    # No tokens left this month: refused before the AI is asked.
    port = free_port()
    app = create_app(
        make_settings(**settings_for(store.url, port, ai_monthly_token_quota=0)),
        configure_logs=False,
    )
    async with running_server(app, port) as url, httpx.AsyncClient(base_url=url) as client:
        refused = await gql(client, DRAFT, {"i": {"conversationId": gid}}, owner.token)
    assert error_codes(refused) == ["QUOTA_EXCEEDED"], refused


async def test_each_conversations_first_messages_in_a_list(gateway: Gateway) -> None:
    """The first page of each conversation's messages, read for a whole list at once, is
    each conversation's own, in order, with the right page info; the next page follows."""
    from resolvers import inbox

    owner = await register(gateway.client)
    tenant_id = int(decode_id(owner.org_id, "Organization"))
    numbers = [unique_number() for _ in range(3)]
    for count, number in zip((3, 1, 2), numbers, strict=True):
        for i in range(count):
            await inbox.file_message(
                tenant_id,
                inbox.Incoming(
                    channel=inbox.Channel.SMS, sender=number, recipient="+15005550006",
                    body=f"{number} #{i}", media_urls=[], provider_sid=f"SM{uuid.uuid4().hex}",
                ),
            )  # fmt: skip
    query = """query { inboxConversations(first: 10) { edges { node { id address
      messages(first: 2) { totalCount pageInfo { hasNextPage endCursor }
        edges { node { body } } } } } } }"""
    body = await gql(gateway.client, query, token=owner.token)
    assert "errors" not in body, body
    found = {e["node"]["address"]: e["node"] for e in body["data"]["inboxConversations"]["edges"]}
    assert set(found) == set(numbers)
    for count, number in zip((3, 1, 2), numbers, strict=True):
        messages = found[number]["messages"]
        bodies = [e["node"]["body"] for e in messages["edges"]]
        assert bodies == [f"{number} #{i}" for i in range(min(count, 2))]
        assert messages["pageInfo"]["hasNextPage"] is (count > 2)
        assert messages["totalCount"] == count
    rest = await gql(
        gateway.client,
        """query($id: ID!, $a: String) { inboxConversation(id: $id) {
          messages(first: 2, after: $a) { edges { node { body } } } } }""",
        {
            "id": found[numbers[0]]["id"],
            "a": found[numbers[0]]["messages"]["pageInfo"]["endCursor"],
        },
        owner.token,
    )
    edges = rest["data"]["inboxConversation"]["messages"]["edges"]
    assert [e["node"]["body"] for e in edges] == [f"{numbers[0]} #2"]


async def test_a_stranger_at_the_system_address_goes_to_the_inbound_tenant(
    store: Any, worker: Any, client: httpx.AsyncClient
) -> None:
    """Nobody wrote to the sender: TWILIO_INBOUND_TENANT's organization gets it."""
    from gateway.app import create_app
    from models.tenants import Tenant
    from tests.conftest import free_port, make_settings, running_server
    from tests.messaging.conftest import Gateway, settings_for

    owner = await register(client)
    slug = (await Tenant.get(id=decode_id(owner.org_id, "Organization"))).slug
    port = free_port()
    overrides = settings_for(store.url, port, twilio_inbound_tenant=slug)
    app = create_app(make_settings(**overrides), configure_logs=False)
    sandbox = app.state.services.sandboxes["twilio"]
    async with running_server(app, port) as url, httpx.AsyncClient(base_url=url) as http:
        await worker(**overrides)
        gw = Gateway(http, url, make_settings(**overrides), sandbox, app)
        number = unique_number()
        await gw.inbound(number, "Hello? Who is this?")
        found = await eventually(one_for(gw, owner.token, number), "filed for the slug")
        assert found["contact"]["phone"] == number
