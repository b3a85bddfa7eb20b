"""Mail test fixtures: a real SMTP server (aiosmtpd), plain or STARTTLS with AUTH."""

from __future__ import annotations

import datetime as dt
import email.policy
import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from models.jobs import Job, JobStatus
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
        return [m for m in self.received if address in str(m["To"])]

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
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "smtp.pem", tmp / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
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
