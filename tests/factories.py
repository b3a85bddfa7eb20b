"""Test data: one factory per GraphQL object type, and a snapshot of the whole store.

`FACTORIES` maps a GraphQL type name to an async function that creates one object of
that type in the tenant of `owner` and returns its global id:

    async def make_contact(client: httpx.AsyncClient, owner: Account) -> str: ...

`tests/transport/test_tenancy.py` walks every Query and Mutation field that takes an ID
(directly or inside an input object) and uses these factories to get an id that
belongs to ANOTHER tenant; it fails, naming the type, when a field needs an id of a
type that has no factory here. So when you add a Node type (Contact, Lead, Task…)
that a field takes by id, add its factory with `@factory("Contact")`: create the
object through the public API (a GraphQL mutation with `gql(..., token=owner.token)`),
not straight in the store, and return the id the API answered.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from strawberry import relay
from tortoise import Tortoise

from gateway.app import create_app
from kit.settings import Settings
from models.mail import OutboundEmail
from resolvers.jobs import JobContext, enqueue, job_handler
from tests.conftest import (
    STRONG_PASSWORD,
    Account,
    free_port,
    gql,
    make_settings,
    register,
    running_server,
)

Factory = Callable[[httpx.AsyncClient, Account], Awaitable[str]]
FACTORIES: dict[str, Factory] = {}


def factory(type_name: str) -> Callable[[Factory], Factory]:
    def add(fn: Factory) -> Factory:
        FACTORIES[type_name] = fn
        return fn

    return add


@factory("Organization")
async def make_organization(client: httpx.AsyncClient, owner: Account) -> str:
    return owner.org_id


INVITE = """mutation($i: InviteMemberInput!) {
  inviteMember(input: $i) { invitation { id } } }"""
ACCEPT = """mutation($i: AcceptInvitationInput!) {
  acceptInvitation(input: $i) { user { id } } }"""
MEMBERS = "query { members(first: 100) { edges { node { id user { id } } } } }"


async def _invite(client: httpx.AsyncClient, owner: Account) -> tuple[str, str]:
    """Invite a new address to the owner's organization: (invitation id, email)."""
    email = f"member-{uuid.uuid4().hex[:10]}@example.com"
    body = await gql(client, INVITE, {"i": {"email": email, "role": "SUPPORT"}}, token=owner.token)
    assert "errors" not in body, body
    return body["data"]["inviteMember"]["invitation"]["id"], email


async def _join(client: httpx.AsyncClient, owner: Account) -> str:
    """A new user accepts an invitation to the owner's organization; their user id."""
    _, email = await _invite(client, owner)
    mail = await OutboundEmail.filter(recipient=email).order_by("-id").first()
    assert mail is not None, f"no invitation mail to {email}"
    token = re.search(r"#token=([A-Za-z0-9_-]{40,})$", mail.text, re.MULTILINE)
    assert token, mail.text
    body = await gql(
        client,
        ACCEPT,
        {"i": {"token": token.group(1), "name": "Member", "password": STRONG_PASSWORD}},
    )
    assert "errors" not in body, body
    return str(body["data"]["acceptInvitation"]["user"]["id"])


@factory("User")
async def make_user(client: httpx.AsyncClient, owner: Account) -> str:
    """A second member of the owner's organization, invited and accepted through the API."""
    return await _join(client, owner)


@factory("Member")
async def make_member(client: httpx.AsyncClient, owner: Account) -> str:
    user_id = await _join(client, owner)
    body = await gql(client, MEMBERS, token=owner.token)
    for edge in body["data"]["members"]["edges"]:
        if edge["node"]["user"]["id"] == user_id:
            return str(edge["node"]["id"])
    raise AssertionError(f"new member {user_id} not listed: {body}")


@factory("Invitation")
async def make_invitation(client: httpx.AsyncClient, owner: Account) -> str:
    return str((await _invite(client, owner))[0])


@factory("ApiKey")
async def make_api_key(client: httpx.AsyncClient, owner: Account) -> str:
    body = await gql(
        client,
        """mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { apiKey { id } } }""",
        {"i": {"name": "factory key", "role": "READ_ONLY"}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["createApiKey"]["apiKey"]["id"])


@factory("Contact")
async def make_contact(client: httpx.AsyncClient, owner: Account) -> str:
    body = await gql(
        client,
        """mutation($i: CreateContactInput!) { createContact(input: $i) { contact { id } } }""",
        {"i": {"name": "Factory Contact"}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["createContact"]["contact"]["id"])


@factory("Lead")
async def make_lead(client: httpx.AsyncClient, owner: Account) -> str:
    body = await gql(
        client,
        """mutation($i: CreateLeadInput!) { createLead(input: $i) { lead { id } } }""",
        {"i": {"title": "Factory Lead"}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["createLead"]["lead"]["id"])


@factory("Task")
async def make_task(client: httpx.AsyncClient, owner: Account) -> str:
    body = await gql(
        client,
        """mutation($i: CreateTaskInput!) { createTask(input: $i) { task { id } } }""",
        {"i": {"title": "Factory Task"}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["createTask"]["task"]["id"])


@factory("WebhookSource")
async def make_webhook_source(client: httpx.AsyncClient, owner: Account) -> str:
    body = await gql(
        client,
        """mutation($i: CreateWebhookSourceInput!) {
          createWebhookSource(input: $i) { source { id } } }""",
        {"i": {"provider": "generic", "description": "factory source"}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["createWebhookSource"]["source"]["id"])


@factory("WebhookEndpoint")
async def make_webhook_endpoint(client: httpx.AsyncClient, owner: Account) -> str:
    """A public-looking https URL passes the SSRF guard (it checks without DNS at creation,
    and creating an endpoint delivers nothing)."""
    body = await gql(
        client,
        """mutation($i: CreateWebhookEndpointInput!) {
          createWebhookEndpoint(input: $i) { endpoint { id } } }""",
        {"i": {"url": "https://hooks.example.com/factory", "description": "factory endpoint"}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["createWebhookEndpoint"]["endpoint"]["id"])


@factory("WebhookDelivery")
async def make_webhook_delivery(client: httpx.AsyncClient, owner: Account) -> str:
    """`sendTestWebhook` stores a PENDING delivery and queues its job; no worker runs here,
    so nothing is sent to the (unreachable) example URL."""
    endpoint_id = await make_webhook_endpoint(client, owner)
    body = await gql(
        client,
        """mutation($i: WebhookEndpointInput!) {
          sendTestWebhook(input: $i) { delivery { id } } }""",
        {"i": {"id": endpoint_id}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["sendTestWebhook"]["delivery"]["id"])


@factory("Conversation")
async def make_conversation(client: httpx.AsyncClient, owner: Account) -> str:
    """`createChatCompletion` asks the OpenAI sandbox the gateway serves at its own public
    URL over HTTP, which an in-process app cannot answer; so a gateway is served on a
    loopback port (the store is the open one; signing keys are the test defaults, so the
    owner's token is valid there) and asked over real HTTP."""
    port = free_port()
    live_app = create_app(
        make_settings(public_url=f"http://127.0.0.1:{port}"), configure_logs=False
    )
    async with (
        running_server(live_app, port) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as live,
    ):
        body = await gql(
            live,
            """mutation($i: CreateChatCompletionInput!) {
              createChatCompletion(input: $i) { conversation { id } } }""",
            {"i": {"messages": [{"role": "USER", "content": "Factory conversation"}]}},
            token=owner.token,
        )
    assert "errors" not in body, body
    return str(body["data"]["createChatCompletion"]["conversation"]["id"])


@contextlib.asynccontextmanager
async def _served_gateway() -> AsyncIterator[httpx.AsyncClient]:
    """A gateway on a loopback port (the open store; test signing keys, so tokens are
    valid there): its Stripe sandbox is reached at its own public URL over HTTP, which an
    in-process app cannot answer."""
    port = free_port()
    live_app = create_app(
        make_settings(public_url=f"http://127.0.0.1:{port}"), configure_logs=False
    )
    async with (
        running_server(live_app, port) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as live,
    ):
        yield live


@factory("Payment")
async def make_payment(client: httpx.AsyncClient, owner: Account) -> str:
    """A succeeded payment (refundable), through `createPaymentIntent` and the sandbox."""
    async with _served_gateway() as live:
        body = await gql(
            live,
            """mutation($i: CreatePaymentIntentInput!) {
              createPaymentIntent(input: $i) { payment { id } } }""",
            {"i": {"amount": "9.99", "currency": "EUR", "paymentMethod": "pm_card_visa",
                   "confirm": True}},
            token=owner.token,
        )  # fmt: skip
    assert "errors" not in body, body
    return str(body["data"]["createPaymentIntent"]["payment"]["id"])


@factory("PaymentCustomer")
async def make_payment_customer(client: httpx.AsyncClient, owner: Account) -> str:
    async with _served_gateway() as live:
        body = await gql(
            live,
            """mutation($i: CreatePaymentCustomerInput!) {
              createPaymentCustomer(input: $i) { customer { id } } }""",
            {"i": {"email": "factory@example.com", "name": "Factory"}},
            token=owner.token,
        )
    assert "errors" not in body, body
    return str(body["data"]["createPaymentCustomer"]["customer"]["id"])


@factory("PaymentSubscription")
async def make_payment_subscription(client: httpx.AsyncClient, owner: Account) -> str:
    """An active Stripe subscription of a new customer, through the API and the sandbox
    (one served gateway: its sandbox knows the customer it made)."""
    async with _served_gateway() as live:
        made = await gql(
            live,
            """mutation($i: CreatePaymentCustomerInput!) {
              createPaymentCustomer(input: $i) { customer { id } } }""",
            {"i": {"email": "factory@example.com"}},
            token=owner.token,
        )
        assert "errors" not in made, made
        body = await gql(
            live,
            """mutation($i: CreatePaymentSubscriptionInput!) {
              createPaymentSubscription(input: $i) { subscription { id } } }""",
            {"i": {"customerId": made["data"]["createPaymentCustomer"]["customer"]["id"],
                   "price": "price_switchboard_pro", "paymentMethod": "pm_card_visa"}},
            token=owner.token,
        )  # fmt: skip
    assert "errors" not in body, body
    return str(body["data"]["createPaymentSubscription"]["subscription"]["id"])


async def another_tenant(client: httpx.AsyncClient) -> Account:
    return await register(client, org="Other Tenant")


async def store_counts() -> dict[str, int]:
    """Rows per table: compare before and after to prove a request changed nothing."""
    counts = {}
    for name, model in sorted(Tortoise.apps["switchboard"].items()):
        counts[name] = await model.all().count()
    return counts


def settings_like(settings: Settings, **overrides: Any) -> Settings:
    """Test settings on the same store as `settings`, with some values changed."""
    return make_settings(database_url=settings.database_url, **overrides)


@contextlib.asynccontextmanager
async def client_for(app: Any, client_ip: str = "10.1.2.3") -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client for another app instance (the store is already open)."""
    transport = httpx.ASGITransport(app=app, client=(client_ip, 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def app_with(settings: Settings, **overrides: Any) -> Any:
    return create_app(settings_like(settings, **overrides), configure_logs=False)


# Fields whose ID argument is not an object id (an idempotency key, an external id…):
# "Mutation.fieldName(input.argument)". The tenancy sweep skips exactly these.
NOT_AN_OBJECT_ID: set[str] = set()


@job_handler("factory.noop")
async def _noop_job(ctx: JobContext, payload: dict[str, Any]) -> None:
    return None


@factory("Job")
async def make_job(client: httpx.AsyncClient, owner: Account) -> str:
    """No public mutation creates a job (the gateway does), so enqueue one for the tenant."""
    tenant_id = int(relay.GlobalID.from_id(owner.org_id).node_id)
    job = await enqueue("factory.noop", {}, tenant_id=tenant_id)
    return str(relay.GlobalID("Job", str(job.id)))


# Values the tenancy sweep puts into input objects on top of their required fields, for
# inputs whose GraphQL-optional fields a resolver requires in some cases (a batch upsert
# item needs `name` to create). Keyed by input type name; keep the values valid.
INPUT_DEFAULTS: dict[str, dict[str, object]] = {
    "ContactUpsertItem": {"name": "Sweep Contact"},
    "LeadUpsertItem": {"title": "Sweep Lead"},
}


@factory("SentEmail")
async def make_sent_email(client: httpx.AsyncClient, owner: Account) -> str:
    body = await gql(
        client,
        """mutation($i: SendEmailInput!) { sendEmail(input: $i) { email { id } } }""",
        {"i": {"to": [{"email": "factory@example.com"}], "subject": "Hi", "text": "Hello."}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["sendEmail"]["email"]["id"])


@factory("EmailBatch")
async def make_email_batch(client: httpx.AsyncClient, owner: Account) -> str:
    body = await gql(
        client,
        """mutation($i: SendBulkEmailInput!) { sendBulkEmail(input: $i) { batch { id } } }""",
        {"i": {"recipients": [{"email": "bulk@example.com"}], "subject": "Hi", "text": "Hello."}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["sendBulkEmail"]["batch"]["id"])


@factory("EmailSuppression")
async def make_email_suppression(client: httpx.AsyncClient, owner: Account) -> str:
    body = await gql(
        client,
        """mutation($i: AddEmailSuppressionInput!) {
          addEmailSuppression(input: $i) { suppression { id } } }""",
        {"i": {"address": f"gone-{uuid.uuid4().hex[:8]}@example.com"}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["addEmailSuppression"]["suppression"]["id"])


@factory("Invoice")
async def make_invoice(client: httpx.AsyncClient, owner: Account) -> str:
    """No mutation creates an invoice yet (uploads come with the files area): one arrives
    the way the mailbox intake hands a PDF over, through the same function."""
    import datetime as dt
    import hashlib

    from tortoise.transactions import in_transaction

    from models.mailbox import ReceivedDocument, ReceivedDocumentContent, ReceivedMessage
    from resolvers import invoices

    tenant_id = int(relay.GlobalID.from_id(owner.org_id).node_id)
    content = b"%PDF-1.4 factory " + uuid.uuid4().bytes
    async with in_transaction() as conn:
        message = await ReceivedMessage.create(
            tenant_id=tenant_id, mailbox="imap://factory@mail.test:993", uidvalidity=1,
            uid=uuid.uuid4().int % 2**31, status="RECEIVED", using_db=conn,
        )  # fmt: skip
        document = await ReceivedDocument.create(
            tenant_id=tenant_id, source_message_id=message.id, filename="factory.pdf",
            content_type="application/pdf", size=len(content),
            sha256=hashlib.sha256(content).hexdigest(), received_at=dt.datetime.now(dt.UTC),
            using_db=conn,
        )  # fmt: skip
        await ReceivedDocumentContent.create(
            tenant_id=tenant_id, document_id=document.id, content=content, using_db=conn
        )
        invoice = await invoices.create_from_document(document, connection=conn)
    return str(relay.GlobalID("Invoice", str(invoice.id)))


PDF_BYTES = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@factory("File")
async def make_file(client: httpx.AsyncClient, owner: Account) -> str:
    """A READY file, made by a direct upload's first step and the gateway's own PUT route
    (the factory client speaks JSON, not multipart)."""
    import hashlib

    body = await gql(
        client,
        """mutation($i: CreateUploadUrlInput!) {
          createUploadUrl(input: $i) { file { id } uploadUrl } }""",
        {
            "i": {
                "name": "factory.pdf",
                "size": len(PDF_BYTES),
                "sha256": hashlib.sha256(PDF_BYTES).hexdigest(),
                "purpose": "DOCUMENT",
            }
        },
        token=owner.token,
    )
    assert "errors" not in body, body
    ticket = body["data"]["createUploadUrl"]
    put = await client.put(ticket["uploadUrl"], content=PDF_BYTES)
    assert put.status_code == 200, put.text
    done = await gql(
        client,
        """mutation($i: CompleteUploadInput!) { completeUpload(input: $i) { file { id } } }""",
        {"i": {"fileId": ticket["file"]["id"]}},
        token=owner.token,
    )
    assert "errors" not in done, done
    return str(ticket["file"]["id"])


def _factory_number() -> str:
    from kit.phones import is_e164

    while True:
        candidate = f"+1415{2 + uuid.uuid4().int % 8}{uuid.uuid4().int % 1_000_000:06d}"
        if is_e164(candidate):
            return candidate


@factory("Message")
async def make_message(client: httpx.AsyncClient, owner: Account) -> str:
    body = await gql(
        client,
        """mutation($i: SendSmsInput!) { sendSms(input: $i) { message { id } } }""",
        {"i": {"to": _factory_number(), "body": "Factory message"}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["sendSms"]["message"]["id"])


@factory("SmsBatch")
async def make_sms_batch(client: httpx.AsyncClient, owner: Account) -> str:
    body = await gql(
        client,
        """mutation($i: SendBulkSmsInput!) { sendBulkSms(input: $i) { batch { id } } }""",
        {"i": {"body": "Factory bulk", "recipients": [{"to": _factory_number()}]}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["sendBulkSms"]["batch"]["id"])


@factory("PhoneOptOut")
async def make_phone_opt_out(client: httpx.AsyncClient, owner: Account) -> str:
    body = await gql(
        client,
        """mutation($i: AddPhoneOptOutInput!) { addPhoneOptOut(input: $i) { optOut { id } } }""",
        {"i": {"number": _factory_number()}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["addPhoneOptOut"]["optOut"]["id"])


@factory("InboxConversation")
async def make_inbox_conversation(client: httpx.AsyncClient, owner: Account) -> str:
    """An incoming SMS, filed the way the inbox's intake job files Twilio's webhook."""
    from resolvers import inbox

    tenant_id = int(relay.GlobalID.from_id(owner.org_id).node_id)
    message = await inbox.file_message(
        tenant_id,
        inbox.Incoming(
            channel=inbox.Channel.SMS,
            sender=_factory_number(),
            recipient="+15005550006",
            body="Factory question",
            media_urls=[],
            provider_sid="SM" + uuid.uuid4().hex,
        ),
    )
    assert message is not None and message.conversation_id is not None
    return str(relay.GlobalID("InboxConversation", str(message.conversation_id)))


@factory("Meeting")
async def make_meeting(client: httpx.AsyncClient, owner: Account) -> str:
    """A Zoom meeting through `connectZoom` and `createMeeting`, against the Zoom sandbox of
    a served gateway."""
    async with _served_gateway() as live:
        base = str(live.base_url).rstrip("/")
        connected = await gql(
            live,
            """mutation($i: ConnectZoomInput!) { connectZoom(input: $i) {
              connectedAccount { id } } }""",
            {"i": {"accountId": "factory", "clientId": "factory-client",
                   "clientSecret": "factory-secret-0123", "baseUrl": f"{base}/sandbox/zoom"}},
            token=owner.token,
        )  # fmt: skip
        assert "errors" not in connected, connected
        body = await gql(
            live,
            """mutation($i: CreateMeetingInput!) { createMeeting(input: $i) { meeting { id } } }""",
            {"i": {"meeting": {"topic": "Factory meeting", "type": "INSTANT"}}},
            token=owner.token,
        )
    assert "errors" not in body, body
    return str(body["data"]["createMeeting"]["meeting"]["id"])


@factory("KnowledgeSource")
async def make_knowledge_source(client: httpx.AsyncClient, owner: Account) -> str:
    """A knowledge source over an uploaded document (indexed later by a job)."""
    file_id = await make_file(client, owner)
    body = await gql(
        client,
        """mutation($i: AddKnowledgeSourceInput!) {
          addKnowledgeSource(input: $i) { source { id } } }""",
        {"i": {"fileId": file_id}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return str(body["data"]["addKnowledgeSource"]["source"]["id"])
