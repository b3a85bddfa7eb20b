"""Mail test fixtures: a real SMTP server (aiosmtpd), plain or STARTTLS with AUTH."""

from __future__ import annotations

import email.policy
import ssl
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from models.jobs import Job, JobStatus
from tests.certs import self_signed_files
from tests.conftest import free_port

LOGIN, PASSWORD = "mailer", "s3cret-pass"


class Inbox:
    """An aiosmtpd handler: keeps what it accepts, refuses recipients when told to."""

    def __init__(self) -> None:
        self.received: list[EmailMessage] = []
        self.envelopes: list[list[str]] = []
        self.rcpt_reply: str | None = None
        self.logins: list[bytes] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        parsed = message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(parsed)
        self.envelopes.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        """Messages whose To holds exactly `address` (the store is shared by the session:
        another module's leftover mail to `ada@…` must not count as mail to `a@…`)."""
        wanted = address.lower()
        return [
            m
            for m in self.received
            if any(a.addr_spec.lower() == wanted for a in getattr(m["To"], "addresses", ()))
        ]

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == LOGIN.encode()
            and auth_data.password == PASSWORD.encode()
        )
        if ok:
            self.logins.append(auth_data.login)
        return AuthResult(success=ok, handled=False)


def self_signed(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    """A certificate for 127.0.0.1: the server's TLS context and the PEM the client trusts."""
    cert_file, key_file = self_signed_files(tmp, "smtp")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


def serve(inbox: Inbox, **options: Any) -> tuple[Controller, int]:
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    return controller, port


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    """A plain SMTP server (a local relay)."""
    box = Inbox()
    controller, port = serve(box)
    yield box, port
    controller.stop()


@pytest.fixture(autouse=True)
async def _no_leftover_jobs(store: Any) -> AsyncIterator[None]:
    """The store is shared by the session: a try this test left scheduled must not run
    in a later test's worker."""
    yield
    await Job.filter(status__in=[JobStatus.QUEUED.value, JobStatus.FAILED.value]).delete()


def smtp_settings(port: int, **more: Any) -> dict[str, Any]:
    return {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": "none", **more}
