"""Mail: every message the gateway sends is a row and a job, written in the caller's
transaction, so a crash loses nothing.

- `render(template, **context)` renders `templates/mail/<template>.html` (autoescaped)
  and `<template>.txt` (plain text) with Jinja2.
- `queue(...)` writes an `OutboundEmail` (status QUEUED, a fixed `Message-ID`) and its
  `mail.send` job with the caller's `connection`.
- The job sends through the provider chain: Resend (credential: tenant → system →
  sandbox; `Idempotency-Key` = the Message-ID) → SMTP (settings, when `SMTP_HOST` is set).
  A permanent refusal (Resend 400/422, an SMTP 5xx reply) fails the message at once,
  without trying the next provider; a transient one (Resend 5xx/429/auth, a timeout, an
  SMTP 4xx reply, a refused connection) falls through to the next provider, and when all
  fail the job retries with its backoff; its last try fails the message.

Headers are built with the standard `email` package (`EmailMessage`, `headerregistry`),
never by concatenation; names and subjects are made one line first.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

import jinja2
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, GatewayError
from kit.settings import Settings
from kit.text import header_safe
from models.mail import EmailStatus, OutboundEmail
from models.tenancy import scoped
from providers import resend, smtp
from providers.errors import ProviderError
from resolvers.context import Context, Services
from resolvers.credentials import CredentialSource, resolve_tenant_credential
from resolvers.jobs import JobContext, enqueue, job_handler
from resolvers.operations import operation
from resolvers.pagination import Page, page_of
from resolvers.upstream import provider_registry

log = logging.getLogger("switchboard.mail")

SEND_JOB = "mail.send"
SANDBOX_PROVIDER = "resend-sandbox"  # the provider name of mail the Resend sandbox took
MAX_ERROR_CHARS = 2000

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("resolvers", "templates/mail"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Rendered:
    html: str
    text: str


def render(template: str, **context: Any) -> Rendered:
    """The HTML (autoescaped) and plain-text bodies of `template` with `context`."""
    return Rendered(
        html=_templates.get_template(f"{template}.html").render(**context),
        text=_templates.get_template(f"{template}.txt").render(**context),
    )


def _address(raw: str) -> Address:
    """`Name <addr@domain>` or `addr@domain` as a header-registry Address (one-line name)."""
    name, addr = parseaddr(header_safe(raw))
    local, _, domain = addr.rpartition("@")
    return Address(display_name=header_safe(name), username=local, domain=domain)


def sender_of(settings: Settings) -> str:
    return str(_address(settings.email_from))


async def queue(
    *,
    settings: Settings,
    tenant_id: int,
    kind: str,
    to: str,
    subject: str,
    body: Rendered,
    to_name: str = "",
    connection: BaseDBAsyncClient | None = None,
) -> OutboundEmail:
    """Write the message and its send job; with `connection`, in the caller's transaction."""
    if connection is None:
        async with in_transaction() as conn:
            return await queue(
                settings=settings,
                tenant_id=tenant_id,
                kind=kind,
                to=to,
                subject=subject,
                body=body,
                to_name=to_name,
                connection=conn,
            )
    sender = _address(settings.email_from)
    email = await OutboundEmail.create(
        tenant_id=tenant_id,
        kind=kind,
        recipient=header_safe(to),
        recipient_name=header_safe(to_name)[:200],
        sender=str(sender),
        subject=header_safe(subject)[:300],
        html=body.html,
        text=body.text,
        message_id=f"<{uuid.uuid4().hex}@{sender.domain or 'switchboard.localhost'}>",
        using_db=connection,
    )
    await enqueue(SEND_JOB, {"email_id": email.id}, tenant_id=tenant_id, connection=connection)
    return email


def _recipient(email: OutboundEmail) -> Address:
    to = _address(email.recipient)
    return Address(
        display_name=header_safe(email.recipient_name), username=to.username, domain=to.domain
    )


def build_message(email: OutboundEmail) -> EmailMessage:
    """The MIME message (text + HTML alternative) that SMTP sends."""
    message = EmailMessage()
    message["From"] = _address(email.sender)
    message["To"] = _recipient(email)
    message["Subject"] = header_safe(email.subject)
    message["Message-ID"] = email.message_id
    message["Date"] = format_datetime(email.created_at or dt.datetime.now(dt.UTC))
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


# The provider chain -------------------------------------------------------------------


class Refused(Exception):
    """A provider refused the message for good: no other provider or try can help."""


Sender = Callable[[OutboundEmail], Awaitable[str | None]]


def _resend_permanent(err: ProviderError) -> bool:
    # Invalid address, validation error: the message itself. 401/403 (our key), 408, 409
    # and 429 (limits) are about the account or the moment: another provider may do.
    return (
        err.status is not None
        and 400 <= err.status < 500
        and err.status
        not in {
            401,
            403,
            408,
            409,
            429,
        }
    )


async def _resend_sender(services: Services, tenant_id: int) -> tuple[str, Sender] | None:
    ctx = Context(services=services, request_id=f"mail-{uuid.uuid4().hex[:12]}")
    try:
        credential = await resolve_tenant_credential(ctx, resend.PROVIDER, tenant_id)
    except GatewayError:  # not configured (no key, no sandbox) or undecryptable
        return None
    client = resend.ResendClient(
        provider_registry(services).http(resend.PROVIDER),
        credential.secrets.get("api_key", ""),
        base_url=credential.base_url or resend.API_URL,
        labels={"tenant": str(tenant_id), "source": credential.source.value},
        own_credential=credential.source == CredentialSource.TENANT,
        guard_url=credential.guard_url,
    )
    name = SANDBOX_PROVIDER if credential.source == CredentialSource.SANDBOX else "resend"

    async def send(email: OutboundEmail) -> str | None:
        try:
            sent = await client.send_email(
                sender=email.sender,
                to=str(_recipient(email)),
                subject=email.subject,
                html=email.html,
                text=email.text,
                headers={"Message-ID": email.message_id},
                idempotency_key=email.message_id,
            )
        except ProviderError as err:
            if _resend_permanent(err):
                raise Refused(str(err)) from None
            raise
        return sent.id

    return name, send


def smtp_config(settings: Settings) -> smtp.SmtpConfig:
    tls_context = None
    if settings.smtp_ca_file:  # a private CA's (or a self-signed) certificate
        tls_context = ssl.create_default_context(cafile=settings.smtp_ca_file)
    return smtp.SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else "",
        security=settings.smtp_security,
        timeout=settings.smtp_timeout_seconds,
        tls_context=tls_context,
    )


def _smtp_sender(services: Services) -> tuple[str, Sender] | None:
    settings = services.settings
    if not settings.smtp_host:
        return None
    config = smtp_config(settings)

    async def send(email: OutboundEmail) -> str | None:
        try:
            await smtp.send(config, build_message(email))
        except ProviderError as err:
            if not err.retryable:
                raise Refused(str(err)) from None
            raise
        return None

    return "smtp", send


async def _chain(services: Services, tenant_id: int) -> list[tuple[str, Sender]]:
    found = [await _resend_sender(services, tenant_id), _smtp_sender(services)]
    return [entry for entry in found if entry is not None]


class AllProvidersFailed(Exception):
    """Every provider failed transiently: the job retries with its backoff."""


async def deliver(services: Services, email: OutboundEmail, *, last_try: bool) -> None:
    """One try of the chain for `email` (QUEUED); records the outcome on the row."""
    attempts = email.attempts + 1
    errors: list[str] = []
    for name, send in await _chain(services, email.tenant_id):
        try:
            provider_id = await send(email)
        except Refused as exc:
            await _record(
                email, attempts, EmailStatus.FAILED, provider=name, error=f"{name}: {exc}"
            )
            log.warning("mail refused", extra={"email_id": email.id, "provider": name})
            return
        except ProviderError as err:
            errors.append(f"{name}: {err}")
            log.info("mail provider failed", extra={"email_id": email.id, "provider": name})
            continue
        await _record(
            email,
            attempts,
            EmailStatus.SENT,
            provider=name,
            error=None,
            provider_message_id=provider_id,
            sent_at=dt.datetime.now(dt.UTC),
        )
        return
    error = "; ".join(errors) or "no email provider is configured"
    status = EmailStatus.FAILED if last_try else EmailStatus.QUEUED
    await _record(email, attempts, status, provider=None, error=error)
    if not last_try:
        raise AllProvidersFailed(error)


async def _record(
    email: OutboundEmail,
    attempts: int,
    status: EmailStatus,
    *,
    provider: str | None,
    error: str | None,
    provider_message_id: str | None = None,
    sent_at: dt.datetime | None = None,
) -> None:
    await OutboundEmail.filter(id=email.id).update(
        status=status.value,
        attempts=attempts,
        provider=provider,
        provider_message_id=provider_message_id,
        last_error=error[:MAX_ERROR_CHARS] if error else None,
        sent_at=sent_at,
        updated_at=dt.datetime.now(dt.UTC),
    )


@job_handler(SEND_JOB, max_attempts=8)
async def send_job(job: JobContext, payload: dict[str, Any]) -> None:
    email = await OutboundEmail.get_or_none(id=int(payload["email_id"]))
    if email is None or email.status != EmailStatus.QUEUED.value:
        return  # sent or failed already (a repeated job), or its tenant is gone
    if job.services is None:
        raise RuntimeError("mail jobs need the process's services (gateway/worker.py)")
    await deliver(job.services, email, last_try=job.is_last_attempt)


# Reading ------------------------------------------------------------------------------


@operation("mail:read")
async def list_sent_emails(
    ctx: Context,
    *,
    status: str | None,
    first: int | None,
    after: str | None,
) -> Page[OutboundEmail]:
    """The caller's organization's messages, newest first (optionally of one status)."""
    principal = ctx.require("mail:read")
    qs = scoped(OutboundEmail, principal.tenant_id)
    if status is not None:
        if status not in {s.value for s in EmailStatus}:
            raise BadUserInput("Unknown email status.", details={"status": "is not a status"})
        qs = qs.filter(status=status)
    return await page_of(ctx, qs, first=first, after=after)
