"""Invoices from a mailbox, against a real dovecot (tests/mailbox/conftest.py): messages go
in by IMAP APPEND, the gateway's client reads them over implicit TLS, STARTTLS or plain,
and what it made is read back through GraphQL and the server's flags."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import httpx
import pytest

from kit.settings import Settings, SettingsError, load_settings
from kit.vault import vault_for
from models.credentials import TENANT_SLOT, Credential
from models.mailbox import ReceivedMessage
from models.tenants import Tenant
from resolvers import mailbox
from tests.conftest import Account, error_codes, eventually, gql, make_settings, register
from tests.factories import client_for
from tests.mailbox.conftest import Boxes
from tests.mailbox.dovecot import Dovecot

DOCS = """{ receivedDocuments(first: 50) { edges { node {
    id filename contentType size sha256 sender subject messageId receivedAt status } } } }"""
ERRORS = """{ integrationErrors(first: 50, provider: IMAP) { edges { node {
    provider operation vendorCode message credentialSource } } } }"""
MAILBOXES = "{ mailboxes(first: 10) { edges { node { mailbox source lastError lastSuccessAt } } } }"
SET = """mutation($i: SetCredentialInput!) { setTenantCredential(input: $i) {
    verified credential { provider fields } } }"""
NODE = "query($id: ID!) { node(id: $id) { ... on ReceivedDocument { id filename } } }"
KEY = """mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }"""

LOOPBACK = ["127.0.0.1/32"]


def pdf(label: str = "") -> bytes:
    """A small PDF, different for every label."""
    return (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n"
        + f"% {label or uuid.uuid4().hex}\n".encode()
        + b"trailer << /Root 1 0 R >>\n%%EOF\n"
    )


def message(
    *attachments: tuple[str, bytes, str],
    subject: str = "Invoice 42",
    sender: str = "Billing <billing@vendor.example>",
) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = "invoices@example.com"
    m["Subject"] = subject
    m["Message-ID"] = make_msgid(domain="vendor.example")
    m.set_content("Please find the invoice attached.")
    for name, content, content_type in attachments:
        maintype, subtype = content_type.split("/")
        m.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return m.as_bytes()


def tenant_id_of(account: Account) -> int:
    return int(base64.b64decode(account.org_id).decode().split(":", 1)[1])


def system_settings(store: Any, dovecot: Dovecot, slug: str, **more: Any) -> Settings:
    """The system mailbox (`IMAP_*`), implicit TLS with the test CA, for `slug`."""
    return make_settings(
        database_url=store.url,
        imap_host="127.0.0.1",
        imap_port=dovecot.tls_port,
        imap_security="tls",
        imap_ca_file=str(dovecot.ca_file),
        imap_user="invoices",
        imap_password=dovecot.users["invoices"],
        imap_tenant=slug,
        **more,
    )


async def documents(client: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    body = await gql(client, DOCS, token=token)
    assert "errors" not in body, body
    return [e["node"] for e in body["data"]["receivedDocuments"]["edges"]]


async def imap_errors(client: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    body = await gql(client, ERRORS, token=token)
    assert "errors" not in body, body
    return [e["node"] for e in body["data"]["integrationErrors"]["edges"]]


@pytest.fixture(autouse=True)
async def _no_leftover_mailboxes(store: Any) -> AsyncIterator[None]:
    """The store is shared by the session: a mailbox configured here must not be read by
    a later test's poll."""
    yield
    await Credential.filter(provider="imap").delete()


@pytest.fixture
async def gateway(settings: Settings, dovecot: Dovecot) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with loopback allowed for tenant-set hosts (the tests' dovecot), and
    its certificate trusted."""
    from gateway.app import create_app

    app = create_app(
        make_settings(
            database_url=settings.database_url,
            outbound_allowed_hosts=LOOPBACK,
            imap_ca_file=str(dovecot.ca_file),
        ),
        configure_logs=False,
    )
    async with client_for(app) as client:
        yield client


async def system_account(client: httpx.AsyncClient) -> tuple[Account, str]:
    account = await register(client, org="Invoices Inc")
    tenant = await Tenant.get(id=tenant_id_of(account))
    return account, tenant.slug


# -- reading ------------------------------------------------------------------------------


async def test_a_pdf_becomes_one_document_seen_only_once_stored(
    store: Any, client: httpx.AsyncClient, dovecot: Dovecot, boxes: Boxes
) -> None:
    account, slug = await system_account(client)
    settings = system_settings(store, dovecot, slug)
    content = pdf()
    boxes.append("invoices", message(("invoice-42.pdf", content, "application/pdf")))
    assert boxes.flags("invoices") == [set()]

    [report] = await mailbox.poll_all(settings, due_only=False)
    assert (report.messages, report.documents, report.error) == (1, 1, None)
    [doc] = await documents(client, account.token)
    assert doc["filename"] == "invoice-42.pdf"
    assert (doc["contentType"], doc["size"], doc["status"]) == (
        "application/pdf",
        len(content),
        "RECEIVED",
    )
    assert doc["sender"] == "Billing <billing@vendor.example>"
    assert doc["subject"] == "Invoice 42" and doc["messageId"].endswith("@vendor.example>")
    assert len(doc["sha256"]) == 64
    assert boxes.flags("invoices") == [{"\\Seen"}]

    # Polled again: nothing unseen, nothing new.
    [again] = await mailbox.poll_all(settings, due_only=False)
    assert (again.messages, again.documents) == (0, 0)
    # The flag lost after the commit (a poll that died in between): read again, recorded
    # once, flagged again.
    boxes.set_unseen("invoices")
    await mailbox.poll_all(settings, due_only=False)
    assert len(await documents(client, account.token)) == 1
    assert await ReceivedMessage.filter(tenant_id=tenant_id_of(account)).count() == 1
    assert boxes.flags("invoices") == [{"\\Seen"}]

    # The same PDF in another message is the same document.
    boxes.append("invoices", message(("copy.pdf", content, "application/pdf"), subject="Again"))
    [third] = await mailbox.poll_all(settings, due_only=False)
    assert (third.messages, third.documents, third.failed) == (1, 0, 0)
    assert [d["filename"] for d in await documents(client, account.token)] == ["invoice-42.pdf"]
    assert boxes.flags("invoices") == [{"\\Seen"}, {"\\Seen"}]

    body = await gql(client, MAILBOXES, token=account.token)
    [box] = [e["node"] for e in body["data"]["mailboxes"]["edges"]]
    assert box["mailbox"] == f"imap://invoices@127.0.0.1:{dovecot.tls_port}"
    assert (box["source"], box["lastError"]) == ("SYSTEM", None) and box["lastSuccessAt"]


async def test_bad_messages_are_reported_and_the_next_one_still_arrives(
    store: Any, client: httpx.AsyncClient, dovecot: Dovecot, boxes: Boxes
) -> None:
    account, slug = await system_account(client)
    settings = system_settings(store, dovecot, slug, imap_max_attachment_bytes=2048)
    broken = (
        b"From: x@vendor.example\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="never-there"\r\n\r\n'
        b"no parts at all\r\n\x00\xff\xfe garbage\r\n"
    )
    boxes.append("invoices", broken)
    boxes.append("invoices", message(("fake.pdf", b"MZ\x90\x00 not a pdf", "application/pdf")))
    boxes.append("invoices", message(("big.pdf", pdf("x" * 4000), "application/pdf")))
    boxes.append("invoices", message(("huge.pdf", pdf("y" * 20000), "application/pdf")))
    # A PDF sent as octet-stream is still a PDF (its content says so); a PNG is ignored.
    good = pdf()
    boxes.append(
        "invoices",
        message(
            ("scan", good, "application/octet-stream"),
            ("logo.png", b"\x89PNG\r\n\x1a\n", "image/png"),
        ),
    )

    [report] = await mailbox.poll_all(settings, due_only=False)
    assert (report.messages, report.documents, report.failed, report.error) == (5, 1, 4, None)
    [doc] = await documents(client, account.token)
    assert (doc["filename"], doc["size"]) == ("scan.pdf", len(good))
    errors = await imap_errors(client, account.token)
    messages = " | ".join(e["message"] for e in errors)
    assert len(errors) == 4, messages
    assert "MIME structure is broken" in messages
    assert "fake.pdf: claims to be a PDF" in messages
    assert "big.pdf" in messages and "over the limit of 2048" in messages
    assert "over the limit of 8192" in messages  # the message itself, not downloaded
    assert {e["provider"] for e in errors} == {"IMAP"}
    assert boxes.flags("invoices") == [{"\\Seen"}] * 5
    failed = await ReceivedMessage.filter(tenant_id=tenant_id_of(account), status="FAILED")
    assert len(failed) == 4 and all(m.error for m in failed)


async def test_a_poll_that_fails_before_the_commit_leaves_the_message_unseen(
    store: Any,
    client: httpx.AsyncClient,
    dovecot: Dovecot,
    boxes: Boxes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account, slug = await system_account(client)
    settings = system_settings(store, dovecot, slug)
    boxes.append("invoices", message(("a.pdf", pdf(), "application/pdf")))

    async def store_down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the store went away")

    monkeypatch.setattr(mailbox, "store", store_down)
    with pytest.raises(ConnectionError):
        await mailbox.poll_all(settings, due_only=False)
    assert boxes.flags("invoices") == [set()]
    assert await documents(client, account.token) == []

    monkeypatch.undo()
    await mailbox.poll_all(settings, due_only=False)
    assert len(await documents(client, account.token)) == 1
    assert boxes.flags("invoices") == [{"\\Seen"}]


async def test_the_worker_reads_the_mailbox_periodically(
    store: Any, client: httpx.AsyncClient, dovecot: Dovecot, boxes: Boxes, worker: Any
) -> None:
    account, slug = await system_account(client)
    boxes.append("invoices", message(("periodic.pdf", pdf(), "application/pdf")))
    settings = system_settings(store, dovecot, slug)
    await worker(**{k: getattr(settings, k) for k in settings.model_fields_set})
    [doc] = await eventually(lambda: documents(client, account.token), "the worker read it")
    assert doc["filename"] == "periodic.pdf"


# -- tenants' own mailboxes ---------------------------------------------------------------


async def set_mailbox(
    client: httpx.AsyncClient, account: Account, dovecot: Dovecot, user: str, **more: Any
) -> dict[str, Any]:
    secrets = {
        "host": "127.0.0.1",
        "port": str(dovecot.plain_port),
        "user": user,
        "password": dovecot.users[user],
        "security": "starttls",
        **more,
    }
    return await gql(
        client, SET, {"i": {"provider": "IMAP", "secrets": secrets}}, token=account.token
    )


@pytest.mark.parametrize("security", ["starttls", "none", "tls"])
async def test_a_tenant_reads_its_own_mailbox(
    store: Any, gateway: httpx.AsyncClient, dovecot: Dovecot, boxes: Boxes, security: str
) -> None:
    account = await register(gateway, org="Own Mailbox")
    port = dovecot.tls_port if security == "tls" else dovecot.plain_port
    settings = make_settings(
        database_url=store.url,
        outbound_allowed_hosts=LOOPBACK,
        imap_ca_file=str(dovecot.ca_file),
    )
    saved = await set_mailbox(
        gateway, account, dovecot, "second", security=security, port=str(port)
    )
    assert "errors" not in saved, saved
    assert saved["data"]["setTenantCredential"]["verified"] is True, saved  # a login on save
    boxes.append("second", message(("own.pdf", pdf(), "application/pdf")))
    [report] = await mailbox.poll_all(settings, due_only=False)
    assert (report.documents, report.error) == (1, None), report
    [doc] = await documents(gateway, account.token)
    assert doc["filename"] == "own.pdf"
    assert boxes.flags("second") == [{"\\Seen"}]
    if security != "none":
        assert "TLS" in dovecot.log()


async def test_a_refused_login_is_reported_and_other_tenants_still_read(
    store: Any, gateway: httpx.AsyncClient, dovecot: Dovecot, boxes: Boxes
) -> None:
    settings = make_settings(
        database_url=store.url,
        outbound_allowed_hosts=LOOPBACK,
        imap_ca_file=str(dovecot.ca_file),
    )
    broken, working = await register(gateway, org="Broken"), await register(gateway, org="Works")

    # Saving a wrong password is refused on the spot (the login is tried).
    refused = await set_mailbox(gateway, broken, dovecot, "invoices", password="wrong")
    assert error_codes(refused) == ["BAD_USER_INPUT"]
    assert "secrets.password" in refused["errors"][0]["extensions"]["details"]

    # A password that stops working later (changed on the server) is found by the poll.
    values = {
        "host": "127.0.0.1",
        "port": str(dovecot.plain_port),
        "user": "invoices",
        "password": "changed-since",
        "security": "starttls",
    }
    await Credential.create(
        tenant_id=tenant_id_of(broken),
        provider="imap",
        slot=TENANT_SLOT,
        ciphertext=vault_for(settings.vault_keys).encrypt(json.dumps(values)),
        field_names=",".join(sorted(values)),
    )
    saved = await set_mailbox(gateway, working, dovecot, "second")
    assert "errors" not in saved, saved
    boxes.append("invoices", message(("not-for-broken.pdf", pdf(), "application/pdf")))
    boxes.append("second", message(("works.pdf", pdf(), "application/pdf")))

    reports = await mailbox.poll_all(settings, due_only=False)
    by_tenant = {r.tenant_id: r for r in reports}
    assert "AUTHENTICATIONFAILED" in (by_tenant[tenant_id_of(broken)].error or "")
    assert by_tenant[tenant_id_of(working)].documents == 1
    [doc] = await documents(gateway, working.token)
    assert doc["filename"] == "works.pdf"
    assert await documents(gateway, broken.token) == []
    [error] = await imap_errors(gateway, broken.token)
    assert (error["operation"], error["vendorCode"]) == ("mailbox.login", "AUTHENTICATIONFAILED")
    assert error["credentialSource"] == "TENANT"
    assert "changed-since" not in error["message"]
    body = await gql(gateway, MAILBOXES, token=broken.token)
    [box] = [e["node"] for e in body["data"]["mailboxes"]["edges"]]
    assert "AUTHENTICATIONFAILED" in box["lastError"] and box["lastSuccessAt"] is None
    assert boxes.flags("invoices") == [set()]  # never read


async def test_a_tenant_mailbox_on_loopback_is_refused_by_the_guard(
    store: Any, client: httpx.AsyncClient, dovecot: Dovecot, boxes: Boxes
) -> None:
    """Without OUTBOUND_ALLOWED_HOSTS, a tenant cannot point the gateway at this machine:
    not when saving, and not by a row that got in some other way."""
    account = await register(client, org="Sneaky")
    for host in ("127.0.0.1", "localhost", "0x7f.1", "169.254.169.254", "[::1]"):
        body = await set_mailbox(client, account, dovecot, "invoices", host=host)
        assert error_codes(body) == ["BAD_USER_INPUT"], (host, body)
        assert "secrets.host" in body["errors"][0]["extensions"]["details"], body

    settings = make_settings(database_url=store.url)
    values = {"host": "127.0.0.1", "port": str(dovecot.plain_port), "user": "invoices"}
    values |= {"password": dovecot.users["invoices"], "security": "none"}
    await Credential.create(
        tenant_id=tenant_id_of(account),
        provider="imap",
        slot=TENANT_SLOT,
        ciphertext=vault_for(settings.vault_keys).encrypt(json.dumps(values)),
        field_names=",".join(sorted(values)),
    )
    boxes.append("invoices", message(("x.pdf", pdf(), "application/pdf")))
    [report] = await mailbox.poll_all(settings, due_only=False)
    assert "outbound guard" in (report.error or "")
    [error] = await imap_errors(client, account.token)
    assert error["vendorCode"] == "unsafe_destination"
    assert boxes.flags("invoices") == [set()]


# -- who sees what ------------------------------------------------------------------------


async def test_documents_stay_in_their_tenant_and_need_a_reading_role(
    store: Any, client: httpx.AsyncClient, dovecot: Dovecot, boxes: Boxes
) -> None:
    account, slug = await system_account(client)
    boxes.append("invoices", message(("mine.pdf", pdf(), "application/pdf")))
    await mailbox.poll_all(system_settings(store, dovecot, slug), due_only=False)
    [doc] = await documents(client, account.token)

    other = await register(client, org="Other")
    assert await documents(client, other.token) == []
    # `node` answers a foreign id exactly as an id that does not exist: null.
    foreign = await gql(client, NODE, {"id": doc["id"]}, token=other.token)
    missing_id = base64.b64encode(b"ReceivedDocument:999999999").decode()
    missing = await gql(client, NODE, {"id": missing_id}, token=other.token)
    assert foreign["data"] == missing["data"] == {"node": None}
    assert error_codes(foreign) == error_codes(missing)
    own = await gql(client, NODE, {"id": doc["id"]}, token=account.token)
    assert own["data"]["node"] == {"id": doc["id"], "filename": "mine.pdf"}

    for role, allowed in (
        ("ACCOUNTING", True),
        ("MANAGER", True),
        ("READ_ONLY", False),
        ("SUPPORT", False),
    ):
        made = await gql(client, KEY, {"i": {"name": role, "role": role}}, token=account.token)
        key = made["data"]["createApiKey"]["secret"]
        body = await gql(client, DOCS, token=key)
        if allowed:
            assert len(body["data"]["receivedDocuments"]["edges"]) == 1, (role, body)
        else:
            assert error_codes(body) == ["FORBIDDEN"], (role, body)
            node = await gql(client, NODE, {"id": doc["id"]}, token=key)
            assert node["data"]["node"] is None, (role, node)


# -- hostile input ------------------------------------------------------------------------


async def test_hostile_headers_and_file_names_are_made_safe(
    store: Any, client: httpx.AsyncClient, dovecot: Dovecot, boxes: Boxes
) -> None:
    account, slug = await system_account(client)
    raw = message(
        ("../../etc/passwd.pdf", pdf(), "application/pdf"),
        ("..\\..\\windows\\win.ini.pdf", pdf(), "application/pdf"),
        ("\x00\x01evil\u202e.pdf", pdf(), "application/pdf"),
        subject="S" * 50_000,
        sender="Mallory " + "m" * 5_000 + " <mallory@evil.example>",
    )
    # NULs in raw header bytes and in an encoded word (no library would write them).
    raw = raw.replace(b"Subject: ", b"X-Junk: a\x00b\nSubject: =?utf-8?q?nul=00here?= ", 1)
    raw = raw.replace(b"From: Mallory", b"From: =?utf-8?q?Mal=00lory?=", 1)
    boxes.append("invoices", raw)
    await mailbox.poll_all(system_settings(store, dovecot, slug), due_only=False)

    docs = await documents(client, account.token)
    names = sorted(d["filename"] for d in docs)
    assert names == ["evil_.pdf", "passwd.pdf", "win.ini.pdf"], names
    for doc in docs:
        assert "\x00" not in doc["subject"] + doc["sender"]
        assert doc["subject"].startswith("nulhere") and doc["sender"].startswith("Mallory")
        assert len(doc["subject"]) <= 300 and len(doc["sender"]) <= 320


def test_file_names_are_only_names() -> None:
    assert mailbox.safe_filename("../../etc/passwd.pdf", 1) == "passwd.pdf"
    assert mailbox.safe_filename("C:\\temp\\x.PDF", 1) == "x.pdf"
    assert mailbox.safe_filename("", 3) == "attachment-3.pdf"
    assert mailbox.safe_filename("...", 4) == "attachment-4.pdf"
    assert mailbox.safe_filename("a\x00b/c\nd.exe", 5) == "c d.exe.pdf"
    assert len(mailbox.safe_filename("x" * 1000 + ".pdf", 1)) == 200


def test_imap_settings_take_the_product_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAP_HOST", "imap.example.com")
    monkeypatch.setenv("IMAP_USER", "invoices@example.com")
    monkeypatch.setenv("IMAP_PASSWORD", "pw")
    monkeypatch.setenv("IMAP_TENANT", "acme")
    settings = load_settings()
    assert (settings.imap_host, settings.imap_port, settings.imap_user) == (
        "imap.example.com",
        993,
        "invoices@example.com",
    )
    assert settings.imap_max_attachment_bytes == 16 * 1024 * 1024
    monkeypatch.delenv("IMAP_TENANT")
    with pytest.raises(SettingsError, match="IMAP_TENANT"):
        load_settings()
