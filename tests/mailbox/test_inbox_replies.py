"""A customer's reply to one of the organization's mails, read from a real IMAP mailbox
(dovecot), lands in the support inbox; the mailbox's other mail does not."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import httpx

from models.mail import OutboundEmail
from resolvers import mailbox
from schema.relay import decode_id
from tests.conftest import gql
from tests.mailbox.conftest import Boxes
from tests.mailbox.dovecot import Dovecot
from tests.mailbox.test_mailbox import system_account, system_settings

SEND = """mutation($i: SendEmailInput!) { sendEmail(input: $i) { email { id } } }"""
INBOX = """query { inboxConversations(first: 10) { edges { node { channel address
  messages(first: 5) { edges { node { body direction } } } } } } }"""


def reply(in_reply_to: str, sender: str, text: str) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = "invoices@example.com"
    m["Subject"] = "Re: Your invoice"
    m["Message-ID"] = make_msgid(domain="customer.example")
    m["In-Reply-To"] = in_reply_to
    m.set_content(text)
    return m.as_bytes()


async def test_a_reply_read_from_the_mailbox_opens_a_conversation(
    store: Any, client: httpx.AsyncClient, dovecot: Dovecot, boxes: Boxes
) -> None:
    account, slug = await system_account(client)
    customer = f"ada-{uuid.uuid4().hex[:6]}@customer.example"
    sent = await gql(
        client, SEND,
        {"i": {"to": [{"email": customer}], "subject": "Your invoice", "text": "Attached."}},
        account.token,
    )  # fmt: skip
    ours = await OutboundEmail.get(id=decode_id(sent["data"]["sendEmail"]["email"]["id"]))
    boxes.append("invoices", reply(ours.message_id, f"Ada <{customer}>", "Paid, thanks!"))
    boxes.append("invoices", reply("<nothing@of.ours>", "x@elsewhere.example", "Unrelated"))
    [report] = await mailbox.poll_all(system_settings(store, dovecot, slug), due_only=False)
    assert report.messages == 2 and report.error is None
    body = await gql(client, INBOX, token=account.token)
    [conversation] = [e["node"] for e in body["data"]["inboxConversations"]["edges"]]
    assert (conversation["channel"], conversation["address"]) == ("EMAIL", customer)
    [message] = [e["node"] for e in conversation["messages"]["edges"]]
    assert message["body"].strip() == "Paid, thanks!" and message["direction"] == "INBOUND"
    # Read again (the flag lost after the commit): filed once.
    boxes.set_unseen("invoices")
    await mailbox.poll_all(system_settings(store, dovecot, slug), due_only=False)
    body = await gql(client, INBOX, token=account.token)
    [again] = [e["node"] for e in body["data"]["inboxConversations"]["edges"]]
    assert len(again["messages"]["edges"]) == 1
