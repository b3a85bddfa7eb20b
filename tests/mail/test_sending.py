"""sendEmail, sendBulkEmail, templates, suppression, unsubscribe and emailStatus, through
the whole gateway on a real port, with a real SMTP server receiving the mail."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from gateway.app import create_app
from models.mail import EmailStatus, OutboundEmail
from resolvers.mail import tracking
from tests.conftest import (
    error_codes,
    eventually,
    free_port,
    gql,
    make_settings,
    register,
    running_server,
)
from tests.credentials.test_credentials import member_token
from tests.mail.conftest import Inbox, serve, smtp_settings

SEND = """mutation($i: SendEmailInput!) { sendEmail(input: $i) {
  email { id status subject recipient to { email name } cc { email } bcc { email } } } }"""
BULK = """mutation($i: SendBulkEmailInput!) { sendBulkEmail(input: $i) {
  batch { id total queued broadcast }
  results { email status error sentEmail { id } } } }"""
SENT = """query($b: ID, $r: String) { sentEmails(first: 50, batchId: $b, recipient: $r) {
  edges { node { id status provider recipient subject attempts lastError } } } }"""
PREVIEW = """query($n: String!, $v: JSON) { previewEmailTemplate(name: $n, variables: $v) {
  subject html text } }"""
SUPPRESS = """mutation($i: AddEmailSuppressionInput!) {
  addEmailSuppression(input: $i) { suppression { id address reason } } }"""
UNSUPPRESS = """mutation($i: RemoveEmailSuppressionInput!) {
  removeEmailSuppression(input: $i) { suppression { address } } }"""
SUPPRESSIONS = "query { emailSuppressions(first: 50) { edges { node { address reason } } } }"


@pytest.fixture
async def gateway(
    store: Any, worker: Any, inbox: tuple[Inbox, int]
) -> AsyncIterator[tuple[httpx.AsyncClient, Inbox, str, Any]]:
    """The gateway on a real port, a worker, and the operator's SMTP relay (aiosmtpd)."""
    box, smtp_port = inbox
    port = free_port()
    overrides = {
        "database_url": store.url,
        "public_url": f"http://127.0.0.1:{port}",
        "email_from": "Switchboard <mail@switchboard.test>",
        **smtp_settings(smtp_port),
    }
    settings = make_settings(**overrides)
    app = create_app(settings, configure_logs=False)
    async with running_server(app, port) as url:
        await worker(**overrides)
        async with httpx.AsyncClient(base_url=url) as client:
            yield client, box, url, settings


async def sent_row(gid: str, status: str) -> OutboundEmail | None:
    from schema.relay import decode_id

    row = await OutboundEmail.get(id=decode_id(gid, "SentEmail"))
    return row if row.status == status else None


def body_of(message: Any, kind: str) -> str:
    return str(message.get_body((kind,)).get_content()).replace("\r\n", "\n")


async def test_send_email_with_a_template_to_cc_and_bcc(gateway: Any) -> None:
    client, box, _url, _ = gateway
    owner = await register(client, org="Acme <Sales>")
    body = await gql(
        client,
        SEND,
        {
            "i": {
                "to": [{"email": "Ada@Example.com", "name": "Ada"}],
                "cc": [{"email": "cc@example.com"}],
                "bcc": [{"email": "hidden@example.com"}],
                "replyTo": "help@acme.test",
                "template": "task_assigned",
                "variables": {"assigner": "Grace", "task_title": "Call <Initech>"},
            }
        },
        owner.token,
    )
    assert "errors" not in body, body
    email = body["data"]["sendEmail"]["email"]
    assert email["status"] == "QUEUED" and email["subject"] == "Task assigned: Call <Initech>"
    assert email["to"] == [{"email": "ada@example.com", "name": "Ada"}]
    await eventually(lambda: sent_row(email["id"], "SENT"), "the message is sent")
    [message] = box.to("ada@example.com")
    assert str(message["From"]) == '"Acme <Sales>" <mail@switchboard.test>'
    assert str(message["Cc"]) == "cc@example.com" and message["Bcc"] is None
    assert str(message["Reply-To"]) == "help@acme.test"
    assert sorted(box.envelopes[-1]) == ["ada@example.com", "cc@example.com", "hidden@example.com"]
    assert "Call &lt;Initech&gt;" in body_of(message, "html")  # autoescaped
    assert "Call <Initech>" in body_of(message, "plain")
    assert message["List-Unsubscribe"] is None  # transactional mail


async def test_a_body_without_text_gets_one_made_from_the_html(gateway: Any) -> None:
    client, box, _url, _ = gateway
    owner = await register(client)
    html = "<p>Hello <b>there</b></p><script>alert(1)</script><p>Bye</p>"
    body = await gql(
        client,
        SEND,
        {"i": {"to": [{"email": "t@example.com"}], "subject": "Hi", "html": html}},
        owner.token,
    )
    assert "errors" not in body, body
    await eventually(lambda: sent_row(body["data"]["sendEmail"]["email"]["id"], "SENT"), "sent")
    [message] = box.to("t@example.com")
    text = body_of(message, "plain")
    assert "Hello there" in text and "Bye" in text and "alert" not in text


async def test_bad_input_is_refused_with_a_code_and_nothing_is_stored(gateway: Any) -> None:
    client, _box, _url, _ = gateway
    owner = await register(client)
    before = await OutboundEmail.all().count()
    base = {"to": [{"email": "x@example.com"}], "subject": "Hi", "text": "t"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "to": []}, "to"),
        ({**base, "to": [{"email": "not-an-address"}]}, "to"),
        ({**base, "to": [{"email": "a\r\nBcc: v@example.com@x.com"}]}, "to"),
        ({**base, "subject": "Hi\r\nX-Injected: 1"}, "subject"),
        ({**base, "text": "nul\x00byte"}, "text"),
        ({**base, "text": "x" * (512 * 1024 + 1)}, "text"),
        ({**base, "to": [{"email": f"r{i}@example.com"} for i in range(51)]}, "to"),
        ({"to": base["to"], "template": "reset_password", "variables": {"token": "x"}}, "template"),
        ({"to": base["to"], "template": "task_assigned", "variables": {}}, "assigner"),
        ({"to": base["to"], "template": "task_assigned", "variables": {"a": {"b": 1}}}, "a"),
        ({"to": base["to"], "template": "task_assigned", "html": "<p>x</p>"}, "template"),
        ({"to": base["to"]}, "html"),
    ]
    for given, field in cases:
        answer = await gql(client, SEND, {"i": given}, owner.token)
        codes = error_codes(answer)
        assert codes == ["BAD_USER_INPUT"], (given, answer)
        details = answer["errors"][0]["extensions"]["details"]
        assert any(k.split(".")[-1] == field or k == field for k in details), (field, answer)
    unknown = await gql(client, SEND, {"i": {"to": base["to"], "template": "nope"}}, owner.token)
    assert error_codes(unknown) == ["NOT_FOUND"]
    assert await OutboundEmail.all().count() == before
    assert (await gql(client, "{ serverInfo { version } }"))["data"]["serverInfo"]["version"]


async def test_roles(gateway: Any) -> None:
    client, _box, _url, settings = gateway
    owner = await register(client)
    one = {"i": {"to": [{"email": "r@example.com"}], "subject": "Hi", "text": "t"}}
    bulk = {"i": {"recipients": [{"email": "r@example.com"}], "subject": "Hi", "text": "t"}}
    read_only, _ = await member_token(settings, owner, "READ_ONLY")
    support, _ = await member_token(settings, owner, "SUPPORT")
    accounting, _ = await member_token(settings, owner, "ACCOUNTING")
    manager, _ = await member_token(settings, owner, "MANAGER")
    for token in (read_only, accounting):
        assert error_codes(await gql(client, SEND, one, token)) == ["FORBIDDEN"]
    assert "errors" not in await gql(client, SEND, one, support)
    assert error_codes(await gql(client, BULK, bulk, support)) == ["FORBIDDEN"]
    assert "errors" not in await gql(client, BULK, bulk, manager)
    for token in (support, read_only, accounting):
        assert error_codes(await gql(client, PREVIEW, {"n": "system_alert"}, token)) == [
            "FORBIDDEN"
        ]
        assert error_codes(await gql(client, SUPPRESSIONS, token=token)) == ["FORBIDDEN"]
        assert error_codes(await gql(client, SENT, token=token)) == ["FORBIDDEN"]
    assert error_codes(await gql(client, SEND, one)) == ["UNAUTHENTICATED"]


async def test_templates_and_preview(gateway: Any) -> None:
    client, _box, _url, _ = gateway
    owner = await register(client, org="Initech")
    listed = await gql(
        client,
        "{ emailTemplates { name sendable variables { name required } } }",
        token=owner.token,
    )
    names = {t["name"]: t for t in listed["data"]["emailTemplates"]}
    for name in (
        "verify_email", "reset_password", "invitation", "task_assigned", "lead_assigned",
        "lead_status_changed", "project_update", "invoice_processed", "system_alert",
        "meeting_invitation",
        "admin_broadcast",
    ):  # fmt: skip
        assert name in names, name
    assert not names["reset_password"]["sendable"] and names["system_alert"]["sendable"]
    shown = await gql(
        client,
        PREVIEW,
        {"n": "system_alert", "v": {"title": "<img src=x onerror=1>"}},
        owner.token,
    )
    preview = shown["data"]["previewEmailTemplate"]
    assert preview["subject"] == "[WARNING] <img src=x onerror=1>"
    assert "&lt;img src=x onerror=1&gt;" in preview["html"] and "<img" not in preview["html"]
    assert "Initech" in preview["html"]
    bad = await gql(client, PREVIEW, {"n": "system_alert", "v": [1, 2]}, owner.token)
    assert error_codes(bad) == ["BAD_USER_INPUT"]


async def test_suppression_refuses_and_removal_lets_mail_go_again(gateway: Any) -> None:
    client, box, _url, _ = gateway
    owner = await register(client)
    other = await register(client)
    added = await gql(client, SUPPRESS, {"i": {"address": "Gone@Example.com"}}, owner.token)
    suppression = added["data"]["addEmailSuppression"]["suppression"]
    assert (suppression["address"], suppression["reason"]) == ("gone@example.com", "MANUAL")
    one = {"i": {"to": [{"email": "ok@example.com"}], "cc": [{"email": "gone@example.com"}],
                 "subject": "Hi", "text": "t"}}  # fmt: skip
    refused = await gql(client, SEND, one, owner.token)
    assert error_codes(refused) == ["EMAIL_SUPPRESSED"]
    assert refused["errors"][0]["extensions"]["addresses"] == ["gone@example.com"]
    # Another organization's list is its own.
    assert "errors" not in await gql(client, SEND, one, other.token)
    # Nor can it remove this one's entry.
    foreign = await gql(client, UNSUPPRESS, {"i": {"id": suppression["id"]}}, other.token)
    assert error_codes(foreign) == ["NOT_FOUND"]
    removed = await gql(client, UNSUPPRESS, {"i": {"id": suppression["id"]}}, owner.token)
    assert removed["data"]["removeEmailSuppression"]["suppression"]["address"] == "gone@example.com"
    again = await gql(client, SEND, one, owner.token)
    assert "errors" not in again, again
    await eventually(lambda: sent_row(again["data"]["sendEmail"]["email"]["id"], "SENT"), "sent")
    assert box.to("ok@example.com")


async def test_bulk_send_reports_each_recipient_and_unsubscribes_in_one_click(
    gateway: Any,
) -> None:
    client, box, url, _ = gateway
    owner = await register(client, org="Newsco")
    await gql(client, SUPPRESS, {"i": {"address": "blocked@example.com"}}, owner.token)
    recipients = [
        {"email": "a@example.com", "name": "Ann", "variables": {"headline": "For Ann"}},
        {"email": "b@example.com"},
        {"email": "B@example.com"},
        {"email": "nope"},
        {"email": "blocked@example.com"},
    ]
    body = await gql(
        client,
        BULK,
        {"i": {"recipients": recipients, "template": "admin_broadcast",
               "variables": {"headline": "News", "message": "Hello all"}}},
        owner.token,
    )  # fmt: skip
    assert "errors" not in body, body
    done = body["data"]["sendBulkEmail"]
    assert [r["status"] for r in done["results"]] == [
        "QUEUED", "QUEUED", "DUPLICATE", "INVALID", "SUPPRESSED",
    ]  # fmt: skip
    assert (done["batch"]["total"], done["batch"]["queued"]) == (5, 2)

    async def both_sent() -> list[Any] | None:
        rows = await gql(client, SENT, {"b": done["batch"]["id"]}, owner.token)
        nodes = [e["node"] for e in rows["data"]["sentEmails"]["edges"]]
        return nodes if len(nodes) == 2 and all(n["status"] == "SENT" for n in nodes) else None

    nodes = await eventually(both_sent, "the batch is sent")
    assert {n["subject"] for n in nodes} == {"For Ann", "News"}
    [message] = box.to("a@example.com")
    assert str(message["To"]) == "Ann <a@example.com>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = re.fullmatch(r"<(.+)>", str(message["List-Unsubscribe"]).strip())
    assert link and link.group(1).startswith(f"{url}/mail/unsubscribe/")
    assert link.group(1) in body_of(message, "html") and link.group(1) in body_of(message, "plain")
    async with httpx.AsyncClient() as outside:
        page = await outside.get(link.group(1))  # a link scanner: nothing happens
        assert page.status_code == 200
        listed = await gql(client, SUPPRESSIONS, token=owner.token)
        assert [e["node"]["address"] for e in listed["data"]["emailSuppressions"]["edges"]] == [
            "blocked@example.com"
        ]
        clicked = await outside.post(
            link.group(1),
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert clicked.status_code == 200
        forged = await outside.post(
            link.group(1)[:-4] + "abcd", content="List-Unsubscribe=One-Click"
        )
        assert forged.status_code == 404
    listed = await gql(client, SUPPRESSIONS, token=owner.token)
    found = {
        e["node"]["address"]: e["node"]["reason"]
        for e in listed["data"]["emailSuppressions"]["edges"]
    }
    assert found == {"blocked@example.com": "MANUAL", "a@example.com": "UNSUBSCRIBED"}
    later = await gql(
        client,
        SEND,
        {"i": {"to": [{"email": "a@example.com"}], "subject": "x", "text": "y"}},
        owner.token,
    )
    assert error_codes(later) == ["EMAIL_SUPPRESSED"]


async def test_bulk_limits(gateway: Any) -> None:
    client, _box, _url, _ = gateway
    owner = await register(client)
    many = [{"email": f"r{i}@example.com"} for i in range(1001)]
    body = await gql(
        client, BULK, {"i": {"recipients": many, "subject": "x", "text": "y"}}, owner.token
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_statuses_only_move_forward(store: Any) -> None:
    from tortoise.transactions import in_transaction

    from models.tenants import Tenant

    tenant = await Tenant.create(name="Fwd", slug=f"fwd-{uuid.uuid4().hex[:8]}")
    row = await OutboundEmail.create(
        tenant_id=tenant.id, kind="direct", recipient="f@example.com", sender="a@b.test",
        subject="s", html="", text="t", message_id=f"<{uuid.uuid4().hex}@t>",
    )  # fmt: skip
    async with in_transaction() as conn:
        assert await tracking.advance(row, EmailStatus.DELIVERED, connection=conn)
        assert not await tracking.advance(row, EmailStatus.SENT, connection=conn)
        assert not await tracking.advance(row, EmailStatus.DEFERRED, connection=conn)
        assert await tracking.advance(row, EmailStatus.OPENED, connection=conn)
    assert (await OutboundEmail.get(id=row.id)).status == "OPENED"


async def test_email_status_streams_queued_then_sent(gateway: Any) -> None:
    client, _box, url, _ = gateway
    owner = await register(client)
    ws_url = url.replace("http", "ws") + "/graphql"
    sent = await gql(
        client,
        SEND,
        {"i": {"to": [{"email": "s@example.com"}], "subject": "Hi", "text": "t"}},
        owner.token,
    )
    gid = sent["data"]["sendEmail"]["email"]["id"]
    other = await register(client)
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {other.token}"}}
            )
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        status_query = "subscription($id: ID!) { emailStatus(id: $id) { status } }"
        await ws.send(json.dumps({"id": "f", "type": "subscribe", "payload": {
            "query": status_query, "variables": {"id": gid}}}))  # fmt: skip
        foreign = json.loads(await ws.recv())
        errors = foreign["payload"]["errors"] if foreign["type"] == "next" else foreign["payload"]
        assert errors[0]["extensions"]["code"] == "NOT_FOUND", foreign
        assert errors[0]["message"] == "SentEmail not found."
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {owner.token}"}}
            )
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription($id: ID!) { emailStatus(id: $id) { status attempts } }",
            "variables": {"id": gid}}}))  # fmt: skip
        seen = []
        while not seen or seen[-1] != "SENT":
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert message["type"] == "next", message
            seen.append(message["payload"]["data"]["emailStatus"]["status"])
        assert seen[-1] == "SENT" and set(seen) <= {"QUEUED", "SENT"}


SET_CREDENTIAL = """mutation($i: SetCredentialInput!) {
  setTenantCredential(input: $i) { credential { id } } }"""


async def test_a_tenants_own_smtp_relay_behind_the_outbound_guard(
    store: Any, worker: Any, inbox: tuple[Inbox, int]
) -> None:
    system_box, system_port = inbox
    tenant_box = Inbox()
    controller, tenant_port = serve(tenant_box)
    relay = {"provider": "SMTP", "secrets": {
        "host": "127.0.0.1", "port": str(tenant_port), "security": "none",
        "fromEmail": "crm@tenant.test"}}  # fmt: skip
    one = {"i": {"to": [{"email": "lead@example.com"}], "subject": "Hi", "text": "t"}}
    try:
        # Without an allow-list a tenant cannot point its relay inside the network.
        guarded = make_settings(database_url=store.url, **smtp_settings(system_port))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(guarded, configure_logs=False)),
            base_url="http://t",
        ) as client:
            owner = await register(client)
            for host in ("127.0.0.1", "localhost", "169.254.169.254", "0x7f.1", "a/b"):
                bad = {"i": {**relay, "secrets": {**relay["secrets"], "host": host}}}
                refused = await gql(client, SET_CREDENTIAL, bad, owner.token)
                assert error_codes(refused) == ["BAD_USER_INPUT"], (host, refused)
                assert "secrets.host" in refused["errors"][0]["extensions"]["details"]

        # An operator who allows it (a private relay): the tenant's mail goes there only.
        allowed = {"outbound_allowed_hosts": ["127.0.0.1"], **smtp_settings(system_port)}
        settings = make_settings(database_url=store.url, **allowed)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, configure_logs=False)),
            base_url="http://t",
        ) as client:
            saved = await gql(client, SET_CREDENTIAL, {"i": relay}, owner.token)
            assert "errors" not in saved, saved
            sent = await gql(client, SEND, one, owner.token)
            assert "errors" not in sent, sent
            await worker(**allowed)
            gid = sent["data"]["sendEmail"]["email"]["id"]
            await eventually(lambda: sent_row(gid, "SENT"), "sent through the tenant's relay")
            [message] = tenant_box.to("lead@example.com")
            assert message["From"].addresses[0].addr_spec == "crm@tenant.test"
            assert system_box.to("lead@example.com") == []
    finally:
        controller.stop()
