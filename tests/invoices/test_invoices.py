"""Invoices end to end: a PDF handed over by the mailbox intake goes to the gateway's own
Rossum sandbox over HTTP, whose signed hooks come back to the gateway; the subscription
(over a real graphql-transport-ws socket) sees it to PROCESSED with the fields read from
that very PDF. Then: hooks twice, no hooks (the poll), Rossum down and back, a PDF OCR
cannot read, corrections and reprocessing, tenancy and roles."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import websockets
from strawberry import relay
from tortoise.transactions import in_transaction

from gateway.app import create_app
from models.invoices import Invoice
from models.jobs import Job, JobStatus
from models.mailbox import ReceivedDocument, ReceivedDocumentContent, ReceivedMessage
from resolvers import invoices
from schema.relay import decode_id
from tests.conftest import (
    Account,
    error_codes,
    eventually,
    free_port,
    gql,
    make_settings,
    register,
    running_server,
)
from tests.credentials.test_credentials import member_token
from tests.pdfs import invoice_pdf, text_pdf

FIELDS = """id status invoiceNumber vendorName totalAmount currency issueDate dueDate
  failureReason lineItems { description quantity unitPrice total }"""
NODE = "query($id: ID!) { node(id: $id) { ... on Invoice { " + FIELDS + " } } }"
LIST = (
    "query($s: InvoiceStatus) { invoices(first: 50, status: $s) { edges { node { id status } } } }"
)
UPDATE = (
    "mutation($i: UpdateInvoiceInput!) { updateInvoice(input: $i) { invoice { " + FIELDS + " } } }"
)
REPROCESS = (
    "mutation($i: ReprocessInvoiceInput!) { reprocessInvoice(input: $i) { invoice { status } } }"
)


@pytest.fixture(autouse=True)
async def _no_leftover_jobs(store: Any) -> AsyncIterator[None]:
    yield
    await Job.filter(status__in=[JobStatus.QUEUED.value, JobStatus.FAILED.value]).delete()


@contextlib.asynccontextmanager
async def serving(
    store: Any, worker: Any, **extra: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, str, Any]]:
    """The gateway on a real port with its Rossum sandbox calling back, and a worker."""
    port = free_port()
    overrides = {
        "database_url": store.url,
        "public_url": f"http://127.0.0.1:{port}",
        "sandbox_enabled": True,
        "sandbox_webhooks": True,
        "rossum_sandbox_step_seconds": 0.05,
        "invoice_poll_seconds": 30,
        **extra,
    }
    app = create_app(make_settings(**overrides), configure_logs=False)
    async with running_server(app, port) as url:
        await worker(**overrides)
        async with httpx.AsyncClient(base_url=url) as client:
            yield client, url, app


@pytest.fixture
async def gateway(store: Any, worker: Any) -> AsyncIterator[tuple[httpx.AsyncClient, str, Any]]:
    async with serving(store, worker) as served:
        yield served


async def arrive(owner: Account, pdf: bytes, name: str = "invoice.pdf") -> str:
    """A PDF as the mailbox intake hands it over (documents, then the invoice, in one
    transaction); the invoice's global id."""
    tenant_id = decode_id(owner.org_id, "Organization")
    async with in_transaction() as conn:
        message = await ReceivedMessage.create(
            tenant_id=tenant_id, mailbox="imap://invoices@mail.test:993", uidvalidity=7,
            uid=uuid.uuid4().int % 2**31, status="RECEIVED", using_db=conn,
        )  # fmt: skip
        document = await ReceivedDocument.create(
            tenant_id=tenant_id, source_message_id=message.id, filename=name,
            content_type="application/pdf", size=len(pdf), sha256=hashlib.sha256(pdf).hexdigest(),
            received_at=dt.datetime.now(dt.UTC), using_db=conn,
        )  # fmt: skip
        await ReceivedDocumentContent.create(
            tenant_id=tenant_id, document_id=document.id, content=pdf, using_db=conn
        )
        invoice = await invoices.create_from_document(document, connection=conn)
    return str(relay.GlobalID("Invoice", str(invoice.id)))


def status_is(client: httpx.AsyncClient, owner: Account, gid: str, *wanted: str) -> Any:
    async def check() -> dict[str, Any] | None:
        node = (await gql(client, NODE, {"id": gid}, owner.token))["data"]["node"]
        return node if node["status"] in wanted else None

    return check


async def test_a_pdf_is_read_and_the_subscription_sees_it_through(gateway: Any) -> None:
    client, url, _app = gateway
    owner = await register(client)
    ws_url = url.replace("http", "ws") + "/graphql"
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        init = {"authorization": f"Bearer {owner.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        gid = await arrive(owner, invoice_pdf("INV-E2E-7"))
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription($id: ID!) { invoiceStatus(id: $id) { status invoiceNumber } }",
            "variables": {"id": gid}}}))  # fmt: skip
        seen: list[str] = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if message["type"] == "complete":
                break
            assert message["type"] == "next", message
            seen.append(message["payload"]["data"]["invoiceStatus"]["status"])
    assert seen[-1] == "PROCESSED", seen
    order = ["STORED", "SUBMITTED", "PROCESSING", "REVIEW_NEEDED", "PROCESSED"]
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)
    node = (await gql(client, NODE, {"id": gid}, owner.token))["data"]["node"]
    assert node["invoiceNumber"] == "INV-E2E-7" and node["vendorName"] == "Initech GmbH"
    assert Decimal(node["totalAmount"]) == Decimal("1250.00") and node["currency"] == "EUR"
    assert (node["issueDate"], node["dueDate"]) == ("2026-11-30", "2026-12-31")
    assert node["lineItems"][0] == {
        "description": "Widget", "quantity": "2", "unitPrice": "10.00", "total": "20.00",
    }  # fmt: skip
    # The owner is told, once.
    query = "{ sentEmails(first: 20) { edges { node { kind recipient subject } } } }"

    async def told() -> list[Any] | None:
        edges = (await gql(client, query, token=owner.token))["data"]["sentEmails"]["edges"]
        found = [e["node"] for e in edges if e["node"]["kind"] == "invoice_processed"]
        return found or None

    [mail] = await eventually(told, "the invoice-processed mail")
    assert mail["recipient"] == owner.email and "INV-E2E-7" in mail["subject"]
    # Another organization cannot follow it, nor read it.
    other = await register(client)
    assert (await gql(client, NODE, {"id": gid}, other.token))["data"]["node"] is None


async def test_a_hook_delivered_twice_changes_nothing(gateway: Any) -> None:
    client, _url, app = gateway
    owner = await register(client)
    gid = await arrive(owner, invoice_pdf("INV-TWICE"))
    await eventually(status_is(client, owner, gid, "PROCESSED"), "processed")
    row = await Invoice.get(id=decode_id(gid, "Invoice"))
    events = await _invoice_events(row.tenant_id)
    # The sandbox's hooks once more, byte for byte (a vendor's retry): stored once, so
    # nothing moves; and a new hook about the same annotation only makes it read again.
    secret = app.state.services.sandbox_webhook_secrets["rossum"]
    posted = (await client.get("/sandbox/rossum/_sandbox/webhooks")).json()["webhooks"]
    mine = [p["body"] for p in posted if str(p["body"]["annotation"]["id"]) == row.annotation_id]
    assert mine
    fresh = {**mine[-1], "request_id": str(uuid.uuid4())}
    for body in (*mine, fresh):
        raw = json.dumps(body, separators=(",", ":")).encode()
        signature = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        answer = await client.post(
            "/webhooks/rossum",
            content=raw,
            headers={"X-Rossum-Signature-SHA256": f"sha256={signature}",
                     "content-type": "application/json"},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json().get("duplicate", False) is (body is not fresh)
    await asyncio.sleep(1.0)
    assert await _invoice_events(row.tenant_id) == events
    assert (await Invoice.get(id=row.id)).status == "PROCESSED"


async def test_without_hooks_the_poll_finishes_it(store: Any, worker: Any) -> None:
    async with serving(store, worker, sandbox_webhooks=False, invoice_poll_seconds=0.2) as (
        client,
        _url,
        _app,
    ):
        owner = await register(client)
        quiet = await arrive(owner, invoice_pdf("INV-QUIET"))
        node = await eventually(status_is(client, owner, quiet, "PROCESSED"), "polled through")
        assert node["invoiceNumber"] == "INV-QUIET"


async def _invoice_events(tenant_id: int) -> list[str]:
    from models.events import OutboxEvent

    rows = await OutboxEvent.filter(tenant_id=tenant_id, type__startswith="invoice.").order_by("id")
    return [r.type for r in rows]


async def test_rossum_down_then_back_submits_once(gateway: Any) -> None:
    client, url, _app = gateway
    owner = await register(client)
    control = f"{url}/sandbox/rossum/_sandbox"
    async with httpx.AsyncClient() as outside:
        fault = {"status": 503, "count": 2, "method": "POST", "path": "/uploads"}
        assert (await outside.post(f"{control}/faults", json=fault)).status_code == 201
        gid = await arrive(owner, invoice_pdf("INV-503"))
        await eventually(
            status_is(client, owner, gid, "PROCESSED"), "processed after the outage", 90
        )
        recorded = (await outside.get(f"{control}/requests")).json()["requests"]
    uploads = [r for r in recorded if r["method"] == "POST" and r["path"].startswith("/uploads")]
    assert [r["status"] for r in uploads][-1] == 202
    row = await Invoice.get(id=decode_id(gid, "Invoice"))
    assert row.submit_attempts == 1 and row.annotation_id


async def test_an_unreadable_pdf_fails_with_a_reason(gateway: Any) -> None:
    client, _url, _app = gateway
    owner = await register(client)
    gid = await arrive(owner, text_pdf([]), "blank.pdf")
    node = await eventually(status_is(client, owner, gid, "FAILED"), "failed")
    assert node["failureReason"]


async def test_corrections_reprocessing_roles_and_bad_input(gateway: Any) -> None:
    client, _url, _app = gateway
    owner = await register(client)
    gid = await arrive(owner, invoice_pdf("INV-FIX"))
    await eventually(status_is(client, owner, gid, "PROCESSED"), "processed")
    fixed = await gql(client, UPDATE, {"i": {"id": gid, "vendorName": "Initech AG",
                                             "totalAmount": "1250.10", "currency": "chf"}},
                      owner.token)  # fmt: skip
    assert "errors" not in fixed, fixed
    node = fixed["data"]["updateInvoice"]["invoice"]
    assert (node["vendorName"], node["totalAmount"], node["currency"]) == (
        "Initech AG",
        "1250.1000",
        "CHF",
    )
    row = await Invoice.get(id=decode_id(gid, "Invoice"))
    assert row.corrected_at is not None and row.corrected_by_id is not None
    for bad in ({"currency": "EURO"}, {"vendorName": "a\r\nb"}, {"totalAmount": "1e20"}, {}):
        answer = await gql(client, UPDATE, {"i": {"id": gid, **bad}}, owner.token)
        assert error_codes(answer) == ["BAD_USER_INPUT"], (bad, answer)

    settings = _app.state.services.settings
    read_only, _ = await member_token(settings, owner, "READ_ONLY")
    support, _ = await member_token(settings, owner, "SUPPORT")
    accounting, _ = await member_token(settings, owner, "ACCOUNTING")
    for token in (read_only, support):
        assert error_codes(await gql(client, LIST, token=token)) == ["FORBIDDEN"]
        assert error_codes(await gql(client, REPROCESS, {"i": {"id": gid}}, token)) == ["FORBIDDEN"]
    assert "errors" not in await gql(client, LIST, token=accounting)

    again = await gql(client, REPROCESS, {"i": {"id": gid}}, accounting)
    assert again["data"]["reprocessInvoice"]["invoice"]["status"] == "STORED"
    node = await eventually(status_is(client, owner, gid, "PROCESSED"), "read again")
    assert node["invoiceNumber"] == "INV-FIX"
    # While OCR reads it, it cannot be sent again.
    await Invoice.filter(id=row.id).update(status="PROCESSING")
    busy = await gql(client, REPROCESS, {"i": {"id": gid}}, owner.token)
    assert error_codes(busy) == ["CONFLICT"]
    other = await register(client)
    assert error_codes(await gql(client, REPROCESS, {"i": {"id": gid}}, other.token)) == [
        "NOT_FOUND"
    ]


UPLOAD_INVOICE = """mutation($input: UploadInvoiceInput!) {
  uploadInvoice(input: $input) { invoice { id status source filename } } }"""
FROM_FILE = """mutation($i: CreateInvoiceFromFileInput!) {
  createInvoiceFromFile(input: $i) { invoice { id status source } } }"""
UPLOAD_FILE = """mutation($input: UploadFileInput!) { uploadFile(input: $input) { file { id } } }"""
DELETE_FILE = "mutation($i: DeleteFileInput!) { deleteFile(input: $i) { deletedId } }"


async def multipart(
    client: httpx.AsyncClient,
    token: str,
    query: str,
    variables: dict[str, Any],
    data: bytes,
    name: str = "invoice.pdf",
) -> dict[str, Any]:
    """The GraphQL multipart request spec's form, as a browser client sends it."""
    response = await client.post(
        "/graphql",
        data={
            "operations": json.dumps({"query": query, "variables": variables}),
            "map": json.dumps({"0": ["variables.input.file"]}),
        },
        files={"0": (name, data, "application/pdf")},
        headers={"Authorization": f"Bearer {token}", "Apollo-Require-Preflight": "true"},
    )
    return dict(response.json())


async def test_an_uploaded_pdf_and_an_existing_file_become_invoices(gateway: Any) -> None:
    client, _url, _app = gateway
    owner = await register(client)
    sent = await multipart(client, owner.token, UPLOAD_INVOICE, {"input": {"file": None}},
                           invoice_pdf("INV-UP-1"))  # fmt: skip
    assert "errors" not in sent, sent
    invoice = sent["data"]["uploadInvoice"]["invoice"]
    assert (invoice["status"], invoice["source"]) == ("STORED", "UPLOAD")
    node = await eventually(status_is(client, owner, invoice["id"], "PROCESSED"), "read")
    assert node["invoiceNumber"] == "INV-UP-1"

    # Its file cannot be deleted under it.
    row = await Invoice.get(id=decode_id(invoice["id"], "Invoice"))
    file_gid = str(relay.GlobalID("File", str(row.file_id)))
    refused = await gql(client, DELETE_FILE, {"i": {"id": file_gid}}, owner.token)
    assert error_codes(refused) == ["CONFLICT"], refused

    # A PNG is no invoice: refused, nothing stored.
    before = await Invoice.all().count()
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    bad = await multipart(client, owner.token, UPLOAD_INVOICE, {"input": {"file": None}}, png)
    assert error_codes(bad) == ["BAD_USER_INPUT"], bad
    assert await Invoice.all().count() == before

    # An existing PDF file, once.
    stored = await multipart(client, owner.token, UPLOAD_FILE,
                             {"input": {"file": None, "purpose": "DOCUMENT"}},
                             invoice_pdf("INV-FILE-1"))  # fmt: skip
    file_id = stored["data"]["uploadFile"]["file"]["id"]
    made = await gql(client, FROM_FILE, {"i": {"fileId": file_id}}, owner.token)
    assert made["data"]["createInvoiceFromFile"]["invoice"]["source"] == "FILE", made
    again = await gql(client, FROM_FILE, {"i": {"fileId": file_id}}, owner.token)
    assert error_codes(again) == ["CONFLICT"]
    other = await register(client)
    foreign = await gql(client, FROM_FILE, {"i": {"fileId": file_id}}, other.token)
    assert error_codes(foreign) == ["NOT_FOUND"]
    support, _ = await member_token(_app.state.services.settings, owner, "SUPPORT")
    denied = await multipart(client, support, UPLOAD_INVOICE, {"input": {"file": None}},
                             invoice_pdf("INV-NO"))  # fmt: skip
    assert error_codes(denied) == ["FORBIDDEN"]
    gid = made["data"]["createInvoiceFromFile"]["invoice"]["id"]
    node = await eventually(status_is(client, owner, gid, "PROCESSED"), "the file read")
    assert node["invoiceNumber"] == "INV-FILE-1"
