"""Addresses and the MIME message: headers are built with the standard `email` package
(`EmailMessage`, `headerregistry`), never by concatenation, so a name or subject with
CR/LF cannot start a header of its own."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

from kit.settings import Settings
from kit.text import header_safe, normalize_email
from models.mail import OutboundEmail

MAX_NAME_CHARS = 200


@dataclass(frozen=True)
class Recipient:
    email: str  # normalized: trimmed, lower-cased, checked
    name: str = ""

    @classmethod
    def of(cls, email: str, name: str | None = None, *, field: str = "to") -> Recipient:
        """A checked recipient (BAD_USER_INPUT naming `field` when the address is bad)."""
        return cls(normalize_email(email, field), header_safe(name or "")[:MAX_NAME_CHARS])

    def as_json(self) -> dict[str, Any]:
        return {"email": self.email, "name": self.name}

    def address(self) -> Address:
        local, _, domain = self.email.rpartition("@")
        return Address(display_name=self.name, username=local, domain=domain)

    def __str__(self) -> str:
        return str(self.address())


def parse_address(raw: str) -> Address:
    """`Name <addr@domain>` or `addr@domain` as a header-registry Address (one-line name)."""
    name, addr = parseaddr(header_safe(raw))
    local, _, domain = addr.rpartition("@")
    return Address(display_name=header_safe(name), username=local, domain=domain)


def sender_address(settings: Settings, organization: str, from_email: str = "") -> Address:
    """The From of a tenant's mail: the organization's name, at the configured address (a
    tenant's own provider's `fromEmail`, else EMAIL_FROM)."""
    configured = parse_address(from_email or settings.email_from)
    return Address(
        display_name=header_safe(organization)[:MAX_NAME_CHARS] or configured.display_name,
        username=configured.username,
        domain=configured.domain,
    )


def sender_of(settings: Settings) -> str:
    return str(parse_address(settings.email_from))


def recipients(rows: list[dict[str, Any]]) -> list[Recipient]:
    return [Recipient(r["email"], header_safe(r.get("name", ""))) for r in rows]


def to_list(email: OutboundEmail) -> list[Recipient]:
    return [
        Recipient(email.recipient, header_safe(email.recipient_name)),
        *recipients(email.to_more),
    ]


def sender_for(email: OutboundEmail, from_email: str = "") -> Address:
    """The stored sender, at a provider credential's own address when it has one."""
    stored = parse_address(email.sender)
    if not from_email:
        return stored
    own = parse_address(from_email)
    return Address(display_name=stored.display_name, username=own.username, domain=own.domain)


def unsubscribe_headers(url: str) -> dict[str, str]:
    """RFC 2369 `List-Unsubscribe` with the RFC 8058 one-click POST."""
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def build_message(
    email: OutboundEmail, *, from_email: str = "", unsubscribe_url: str | None = None
) -> EmailMessage:
    """The MIME message (text + HTML alternative) that SMTP sends; `Bcc` is only in the
    envelope (aiosmtplib takes it out of the headers it sends)."""
    message = EmailMessage()
    message["From"] = sender_for(email, from_email)
    message["To"] = [r.address() for r in to_list(email)]
    if email.cc:
        message["Cc"] = [r.address() for r in recipients(email.cc)]
    if email.bcc:
        message["Bcc"] = [r.address() for r in recipients(email.bcc)]
    if email.reply_to:
        message["Reply-To"] = parse_address(email.reply_to)
    message["Subject"] = header_safe(email.subject)
    message["Message-ID"] = email.message_id
    message["Date"] = format_datetime(email.created_at or dt.datetime.now(dt.UTC))
    if unsubscribe_url:
        for name, value in unsubscribe_headers(unsubscribe_url).items():
            message[name] = value
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message
