"""The mail service: rows and durable jobs, Resend (its sandbox over HTTP) → SMTP (a real
aiosmtpd server, plain and STARTTLS with AUTH), permanent and transient refusals."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from kit.settings import load_settings
from models.mail import OutboundEmail
from models.tenants import Tenant
from resolvers import mail
from tests.conftest import (
    STRONG_PASSWORD,
    eventually,
    free_port,
    gql,
    make_settings,
    running_server,
)
from tests.mail.conftest import LOGIN, PASSWORD, Inbox, self_signed, serve, smtp_settings

VERIFY = "mutation($i: EmailTokenInput!) { verifyEmail(input: $i) { email emailVerified } }"
SENT = """query { sentEmails(first: 10) { edges { node {
    kind recipient subject status attempts provider lastError messageId text } } } }"""
REGISTER = """mutation($input: RegisterOrganizationInput!) {
  registerOrganization(input: $input) { accessToken user { email } } }"""


async def new_tenant() -> Tenant:
    return await Tenant.create(name="Acme", slug=f"acme-{uuid.uuid4().hex[:8]}")


async def queued(tenant: Tenant, *, to: str, name: str = "", subject: str = "Hello") -> int:
    body = mail.render(
        "verify_email",
        {"name": name, "token": "t" * 43, "link": "https://app.test/v", "hours": 24},
        organization=tenant.name,
    )
    row = await mail.queue(
        settings=make_settings(),
        tenant_id=tenant.id,
        kind="verify_email",
        to=mail.Recipient("".join(to.split()).lower(), name),
        body=mail.Rendered(subject, body.html, body.text),
    )
    return row.id


async def status_of(email_id: int, wanted: str) -> OutboundEmail | None:
    row = await OutboundEmail.get(id=email_id)
    return row if row.status == wanted else None


# SMTP --------------------------------------------------------------------------------


async def test_a_queued_message_survives_until_a_worker_starts(
    store: Any, worker: Any, inbox: tuple[Inbox, int]
) -> None:
    box, port = inbox
    tenant = await new_tenant()
    email_id = await queued(tenant, to="ada@example.com", name="Ada")
    row = await OutboundEmail.get(id=email_id)
    assert (row.status, row.attempts, box.received) == ("QUEUED", 0, [])

    # No Resend at all (sandboxes off, no key): straight to SMTP.
    await worker(sandbox_enabled=False, **smtp_settings(port))
    sent = await eventually(lambda: status_of(email_id, "SENT"), "the message is sent")
    assert (sent.provider, sent.attempts, sent.last_error) == ("smtp", 1, None)
    [message] = box.to("ada@example.com")
    assert message["Message-ID"] == sent.message_id
    assert str(message["To"]) == "Ada <ada@example.com>"
    assert "t" * 43 in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "t" * 43 in message.get_body(("html",)).get_content()  # type: ignore[union-attr]


async def test_cr_lf_in_a_name_or_subject_never_makes_a_header(
    store: Any, worker: Any, inbox: tuple[Inbox, int]
) -> None:
    box, port = inbox
    tenant = await new_tenant()
    email_id = await queued(
        tenant,
        to="eve@example.com",
        name="Eve\r\nBcc: victim@example.com",
        subject="Hi\r\nX-Injected: yes",
    )
    await worker(sandbox_enabled=False, **smtp_settings(port))
    await eventually(lambda: status_of(email_id, "SENT"), "the message is sent")
    [message] = box.to("eve@example.com")
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert len(message.get_all("Subject") or []) == 1
    assert box.envelopes == [["eve@example.com"]]


async def test_starttls_with_auth(store: Any, worker: Any, tmp_path: Path) -> None:
    context, cert_file = self_signed(tmp_path)
    box = Inbox()
    controller, port = serve(
        box,
        tls_context=context,
        require_starttls=True,
        authenticator=box.authenticate,
        auth_required=True,
    )
    try:
        tenant = await new_tenant()
        email_id = await queued(tenant, to="tls@example.com")
        await worker(
            sandbox_enabled=False,
            **smtp_settings(
                port,
                smtp_security="starttls",
                smtp_ca_file=str(cert_file),
                smtp_username=LOGIN,
                smtp_password=PASSWORD,
            ),
        )
        await eventually(lambda: status_of(email_id, "SENT"), "the message is sent")
        assert box.logins == [LOGIN.encode()]
        assert len(box.to("tls@example.com")) == 1
    finally:
        controller.stop()


async def test_an_smtp_5xx_fails_the_message_at_once(
    store: Any, worker: Any, inbox: tuple[Inbox, int]
) -> None:
    box, port = inbox
    box.rcpt_reply = "550 5.1.1 No such user"
    tenant = await new_tenant()
    email_id = await queued(tenant, to="nobody@example.com")
    await worker(sandbox_enabled=False, **smtp_settings(port))
    failed = await eventually(lambda: status_of(email_id, "FAILED"), "the message fails")
    assert (failed.provider, failed.attempts) == ("smtp", 1)
    assert "550" in (failed.last_error or "")
    assert box.received == []


async def test_an_smtp_4xx_is_retried(store: Any, worker: Any, inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    box.rcpt_reply = "451 4.3.0 Try again later"
    tenant = await new_tenant()
    email_id = await queued(tenant, to="later@example.com")
    await worker(sandbox_enabled=False, **smtp_settings(port))

    async def tried() -> OutboundEmail | None:
        row = await OutboundEmail.get(id=email_id)
        return row if row.attempts >= 1 and row.last_error else None

    row = await eventually(tried, "the first try failed")
    assert row.status == "QUEUED" and "451" in (row.last_error or "")


# Resend → SMTP, through the whole gateway -------------------------------------------


@pytest.fixture
async def gateway(
    store: Any, worker: Any, inbox: tuple[Inbox, int]
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Inbox]]:
    """The gateway on a real port (its Resend sandbox included), a worker, an SMTP server;
    yields (GraphQL client, the Resend sandbox's control client, the SMTP inbox)."""
    box, smtp_port = inbox
    port = free_port()
    overrides = {
        "database_url": store.url,
        "public_url": f"http://127.0.0.1:{port}",
        # The operator's Resend is this gateway's own sandbox: real HTTP, faults on call.
        "resend_api_key": "re_test_key",
        "resend_base_url": f"http://127.0.0.1:{port}/sandbox/resend",
        **smtp_settings(smtp_port),
    }
    app = create_app(make_settings(**overrides), configure_logs=False)
    async with running_server(app, port) as url:
        await worker(**overrides)
        async with (
            httpx.AsyncClient(base_url=url) as client,
            httpx.AsyncClient(base_url=f"{url}/sandbox/resend") as control,
        ):
            yield client, control, box


async def test_registration_mail_falls_back_to_smtp_and_verifies(gateway: Any) -> None:
    client, control, box = gateway
    # Resend answers 503 to every try: the mail goes through SMTP, exactly once.
    r = await control.post("/_sandbox/faults", json={"status": 503, "count": -1})
    assert r.status_code == 201, r.text
    address = f"new-{uuid.uuid4().hex[:8]}@example.com"
    body = await gql(
        client,
        REGISTER,
        {
            "input": {
                "organizationName": "Mailco",
                "email": address,
                "password": STRONG_PASSWORD,
                "name": "Nia",
            }
        },
    )
    assert "errors" not in body, body
    token = body["data"]["registerOrganization"]["accessToken"]

    [message] = await eventually(lambda: _async(box.to(address)), "the mail arrives by SMTP")
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    found = re.search(r"#token=([A-Za-z0-9_-]{40,})$", text, re.MULTILINE)
    assert found, text
    verified = await gql(client, VERIFY, {"i": {"token": found.group(1)}})
    assert verified["data"]["verifyEmail"] == {"email": address, "emailVerified": True}

    listed = await gql(client, SENT, token=token)
    [node] = [e["node"] for e in listed["data"]["sentEmails"]["edges"]]
    assert (node["kind"], node["recipient"], node["status"]) == ("verify_email", address, "SENT")
    assert (node["provider"], node["attempts"]) == ("smtp", 1)
    assert node["messageId"] == message["Message-ID"]
    assert node["text"] is None  # bodies only for the sandbox's mail
    recorded = (await control.get("/_sandbox/requests")).json()["requests"]
    sends = [
        q
        for q in recorded
        if q["path"].endswith("/emails")
        and q["headers"].get("idempotency-key") == message["Message-ID"]
    ]
    assert sends and all(q["status"] == 503 for q in sends)
    assert len(box.to(address)) == 1


async def test_the_resend_sandbox_takes_mail_and_sent_emails_shows_it(gateway: Any) -> None:
    client, _control, box = gateway
    address = f"dev-{uuid.uuid4().hex[:8]}@example.com"
    body = await gql(
        client,
        REGISTER,
        {
            "input": {
                "organizationName": "Devco",
                "email": address,
                "password": STRONG_PASSWORD,
                "name": "Dev",
            }
        },
    )
    assert "errors" not in body, body
    token = body["data"]["registerOrganization"]["accessToken"]

    async def sent() -> dict[str, Any] | None:
        listed = await gql(client, SENT, token=token)
        [node] = [e["node"] for e in listed["data"]["sentEmails"]["edges"]]
        return node if node["status"] == "SENT" else None

    node = await eventually(sent, "the sandbox took the mail")
    assert node["provider"] == "resend-sandbox"
    assert re.search(r"#token=([A-Za-z0-9_-]{40,})$", node["text"], re.MULTILINE)
    assert box.received == []


async def test_a_resend_422_fails_without_trying_smtp(gateway: Any) -> None:
    client, control, box = gateway
    r = await control.post("/_sandbox/faults", json={"status": 422, "count": -1})
    assert r.status_code == 201, r.text
    address = f"bad-{uuid.uuid4().hex[:8]}@example.com"
    body = await gql(
        client,
        REGISTER,
        {
            "input": {
                "organizationName": "Badco",
                "email": address,
                "password": STRONG_PASSWORD,
                "name": "Bad",
            }
        },
    )
    assert "errors" not in body, body
    token = body["data"]["registerOrganization"]["accessToken"]

    async def failed() -> dict[str, Any] | None:
        listed = await gql(client, SENT, token=token)
        [node] = [e["node"] for e in listed["data"]["sentEmails"]["edges"]]
        return node if node["status"] == "FAILED" else None

    node = await eventually(failed, "the message failed")
    assert (node["provider"], node["attempts"]) == ("resend-sandbox", 1)
    assert "422" in node["lastError"]
    assert box.received == []


async def _async(value: Any) -> Any:
    return value


def test_the_product_documents_email_names_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "EMAIL_HOST": "smtp.example.com",
        "EMAIL_PORT": "465",
        "EMAIL_USERNAME": "mailer",
        "EMAIL_PASSWORD": "s3cret",
        "EMAIL_FROM": "Acme <hello@acme.test>",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_username) == (
        "smtp.example.com",
        465,
        "mailer",
    )
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "s3cret"
    assert mail.sender_of(settings) == "Acme <hello@acme.test>"


ASK_RESET = "mutation($i: RequestPasswordResetInput!) { requestPasswordReset(input: $i) { ok } }"
RESET = "mutation($i: ResetPasswordInput!) { resetPassword(input: $i) { ok } }"
LOGIN_MUTATION = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }"
INVITE = "mutation($i: InviteMemberInput!) { inviteMember(input: $i) { invitation { id } } }"
ACCEPT = "mutation($i: AcceptInvitationInput!) { acceptInvitation(input: $i) { accessToken } }"


def _link_token(message: EmailMessage, path: str) -> str:
    """The token of the front-end link at `path` in the mail's text, as a person follows it."""
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    found = re.search(
        rf"^https?://[^\s/]+{re.escape(path)}#token=([A-Za-z0-9_-]{{40,}})$", text, re.M
    )
    assert found, text
    return found.group(1)


async def test_reset_and_invitation_mail_arrive_by_smtp_and_their_links_work(gateway: Any) -> None:
    client, control, box = gateway
    # Resend down: everything below arrives by SMTP.
    assert (
        await control.post("/_sandbox/faults", json={"status": 503, "count": -1})
    ).status_code == 201
    address = f"reset-{uuid.uuid4().hex[:8]}@example.com"
    body = await gql(
        client,
        REGISTER,
        {
            "input": {
                "organizationName": "Resetco",
                "email": address,
                "password": STRONG_PASSWORD,
                "name": "Rae",
            }
        },
    )
    owner_token = body["data"]["registerOrganization"]["accessToken"]

    asked = await gql(client, ASK_RESET, {"i": {"email": address}})
    assert "errors" not in asked, asked

    def reset_mail() -> Any:
        return _async([m for m in box.to(address) if "reset" in str(m["Subject"]).lower()])

    [message] = await eventually(reset_mail, "the reset mail arrives by SMTP")
    token = _link_token(message, "/reset-password")
    new_password = STRONG_PASSWORD + " again"
    done = await gql(client, RESET, {"i": {"token": token, "newPassword": new_password}})
    assert done["data"]["resetPassword"]["ok"] is True, done
    login = await gql(client, LOGIN_MUTATION, {"i": {"email": address, "password": new_password}})
    owner_token = login["data"]["login"]["accessToken"]  # the reset ended the other sessions
    assert owner_token, login

    invitee = f"invitee-{uuid.uuid4().hex[:8]}@example.com"
    invited = await gql(
        client, INVITE, {"i": {"email": invitee, "role": "SUPPORT"}}, token=owner_token
    )
    assert "errors" not in invited, invited
    [invitation] = await eventually(
        lambda: _async(box.to(invitee)), "the invitation arrives by SMTP"
    )
    assert str(invitation["From"]).startswith("Resetco <")  # the organization's name as sender
    accepted = await gql(
        client,
        ACCEPT,
        {
            "i": {
                "token": _link_token(invitation, "/accept-invitation"),
                "name": "Ivy",
                "password": STRONG_PASSWORD,
            }
        },
    )
    assert accepted["data"]["acceptInvitation"]["accessToken"], accepted


BULK = """mutation($i: SendBulkEmailInput!) {
  sendBulkEmail(input: $i) { batch { id queued } results { status } } }"""
BATCH_SENT = """query($b: ID) { sentEmails(first: 50, batchId: $b) {
  edges { node { status provider } } } }"""


async def test_a_bulk_send_through_resend_goes_in_batch_requests(gateway: Any) -> None:
    client, control, box = gateway
    address = f"bulk-{uuid.uuid4().hex[:8]}@example.com"
    body = await gql(client, REGISTER, {"input": {
        "organizationName": "Bulkco", "email": address, "password": STRONG_PASSWORD}})  # fmt: skip
    token = body["data"]["registerOrganization"]["accessToken"]

    async def batch_sent(batch_id: str, n: int) -> list[Any] | None:
        rows = await gql(client, BATCH_SENT, {"b": batch_id}, token=token)
        nodes = [e["node"] for e in rows["data"]["sentEmails"]["edges"]]
        return nodes if len(nodes) == n and all(x["status"] != "QUEUED" for x in nodes) else None

    async def bulk(n: int) -> str:
        recipients = [{"email": f"r{i}-{uuid.uuid4().hex[:6]}@example.com"} for i in range(n)]
        sent = await gql(client, BULK, {"i": {"recipients": recipients, "subject": "News",
                                              "text": "Hello"}}, token=token)  # fmt: skip
        assert "errors" not in sent, sent
        return str(sent["data"]["sendBulkEmail"]["batch"]["id"])

    def posts(path: str, recorded: list[Any]) -> list[Any]:
        """The bulk's requests to `path` (not the registration's own mail)."""
        return [
            r
            for r in recorded
            if r["method"] == "POST"
            and r["path"].endswith(path)
            and "News" in json.dumps(r["body"])
        ]

    await control.post("/_sandbox/reset")
    five = await bulk(5)
    nodes = await eventually(lambda: batch_sent(five, 5), "the batch is sent")
    assert {(n["status"], n["provider"]) for n in nodes} == {("SENT", "resend-sandbox")}
    recorded = (await control.get("/_sandbox/requests")).json()["requests"]
    assert len(posts("/emails/batch", recorded)) == 1 and posts("/emails", recorded) == []

    # The batch refused as a whole (one bad message): each message goes on its own.
    await control.post("/_sandbox/reset")
    fault = {"status": 422, "count": 1, "path": "/emails/batch"}
    assert (await control.post("/_sandbox/faults", json=fault)).status_code == 201
    three = await bulk(3)
    nodes = await eventually(lambda: batch_sent(three, 3), "sent one by one")
    assert {(n["status"], n["provider"]) for n in nodes} == {("SENT", "resend-sandbox")}
    recorded = (await control.get("/_sandbox/requests")).json()["requests"]
    assert len(posts("/emails/batch", recorded)) == 1 and len(posts("/emails", recorded)) == 3
    assert all("News" not in str(m["Subject"]) for m in box.received)  # none fell to SMTP
