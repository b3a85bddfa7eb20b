"""Replies to the gateway's own mails land in the support inbox: the mailbox intake
(`resolvers.mailbox`: parse, then store in one transaction) files a message whose
In-Reply-To or References names one of the organization's Message-IDs as an EMAIL
conversation with its contact; a mail that answers nothing of ours stays out. The reply
from the inbox goes out by mail ("Re: …")."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import httpx

from models.mail import OutboundEmail
from providers import imap
from resolvers import mailbox
from resolvers.credentials import CredentialSource
from schema.relay import decode_id
from tests.conftest import gql, register

SEND = """mutation($i: SendEmailInput!) { sendEmail(input: $i) { email { id } } }"""
CONVERSATIONS = """query { inboxConversations(first: 20, channel: EMAIL) { edges { node {
  id address subject unread contact { name email }
  messages(first: 10) { edges { node { direction body channel } } } } } } }"""
REPLY = """mutation($i: ReplyToConversationInput!) { replyToConversation(input: $i) {
  message { channel body recipient } conversation { status } } }"""


def reply_to(message_id: str, sender: str, body: str, *, subject: str = "Re: Your quote") -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = "support@example.com"
    m["Subject"] = subject
    m["Message-ID"] = make_msgid(domain="customer.example")
    m["In-Reply-To"] = message_id
    m["References"] = f"<older@customer.example> {message_id}"
    m.set_content(body)
    return m.as_bytes()


async def intake(tenant_id: int, raw: bytes) -> None:
    box = mailbox.Mailbox(
        tenant_id=tenant_id,
        source=CredentialSource.SYSTEM,
        config=imap.ImapConfig(host="mail.example.com", user="support", password="x"),
        guarded=False,
    )
    parsed = mailbox.parse(raw, max_bytes=1024 * 1024)
    await mailbox.store(box, 1, uuid.uuid4().int % 2**31, parsed)


async def test_a_reply_to_our_mail_opens_an_email_conversation(
    client: httpx.AsyncClient, store: Any
) -> None:
    owner = await register(client)
    tenant_id = decode_id(owner.org_id, "Organization")
    customer = f"grace-{uuid.uuid4().hex[:6]}@customer.example"
    sent = await gql(
        client, SEND,
        {"i": {"to": [{"email": customer}], "subject": "Your quote", "text": "Here it is."}},
        owner.token,
    )  # fmt: skip
    assert "errors" not in sent, sent
    ours = await OutboundEmail.get(id=decode_id(sent["data"]["sendEmail"]["email"]["id"]))
    await intake(tenant_id, reply_to(ours.message_id, f"Grace <{customer}>", "Can you do 10%?"))
    await intake(tenant_id, reply_to(ours.message_id, f"Grace <{customer}>", "Or 5%?"))
    # A mail that answers nothing of ours, and one answering another organization's mail.
    await intake(tenant_id, reply_to("<unknown@elsewhere>", "spam@bad.example", "Buy now"))
    other = await register(client)
    await intake(
        decode_id(other.org_id, "Organization"),
        reply_to(ours.message_id, f"Grace <{customer}>", "Wrong tenant"),
    )
    body = await gql(client, CONVERSATIONS, token=owner.token)
    [conversation] = [e["node"] for e in body["data"]["inboxConversations"]["edges"]]
    assert conversation["address"] == customer and conversation["unread"] == 2
    assert conversation["contact"] == {"name": "Grace", "email": customer}
    assert conversation["subject"] == "Re: Your quote"
    texts = [e["node"]["body"].strip() for e in conversation["messages"]["edges"]]
    assert texts == ["Can you do 10%?", "Or 5%?"]
    elsewhere = await gql(client, CONVERSATIONS, token=other.token)
    assert elsewhere["data"]["inboxConversations"]["edges"] == []
    answer = await gql(
        client, REPLY, {"i": {"conversationId": conversation["id"], "body": "10% it is."}},
        owner.token,
    )  # fmt: skip
    assert "errors" not in answer, answer
    assert answer["data"]["replyToConversation"]["message"]["channel"] == "EMAIL"
    mail = await OutboundEmail.filter(recipient=customer, kind="inbox_reply").first()
    assert mail is not None and mail.subject == "Re: Your quote" and "10% it is." in mail.text
