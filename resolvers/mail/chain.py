"""The provider chain a tenant's mail goes through, and one try of it.

The chain: Resend → SendGrid → SMTP, each present when configured. A tenant that brought
its own (a Resend or SendGrid key, an SMTP relay: `setTenantCredential`, encrypted in the
vault) gets only its own providers — its mail leaves through its accounts and domains.
Otherwise the operator's (RESEND_API_KEY, SENDGRID_API_KEY, EMAIL_HOST). With neither, the
Resend sandbox (development and tests) takes the mail.

A permanent refusal (Resend/SendGrid 400/422, an SMTP 5xx reply, a refused address) fails
the message at once, without trying the next provider; a transient one (5xx/429/auth, a
timeout, an SMTP 4xx reply, a refused connection) falls through to the next, and when all
fail the job retries with its backoff; its last try fails the message.

SMTP is at least once: when the connection breaks after the server took the message but
before its reply reached us, the next try sends it again (same Message-ID, so clients
that de-duplicate show one). Resend is exactly once within 24 hours (`Idempotency-Key` =
the Message-ID). SendGrid has no idempotency key; the layer never retries a send whose
request was written (see providers/sendgrid.py).
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kit.errors import GatewayError
from kit.settings import Settings
from models.mail import OutboundEmail
from providers import resend, sendgrid, smtp
from providers.errors import ProviderError
from providers.http import BearerClient
from resolvers.context import Context, Services
from resolvers.credentials import (
    CredentialSource,
    ResolvedCredential,
    is_own_sandbox,
    resolve_tenant_credential,
)
from resolvers.mail import compose
from resolvers.upstream import provider_registry

log = logging.getLogger("switchboard.mail")

PROVIDERS = ("resend", "sendgrid", "smtp")  # the chain's order
# The custom argument a SendGrid send carries, so its events find the row directly.
SENDGRID_EMAIL_ARG = "switchboard_email_id"


def taken_by_sandbox(provider: str | None) -> bool:
    """Whether a sandbox took the message: nothing was delivered, so its body may be shown
    (it is where a developer reads a verification link)."""
    return bool(provider) and str(provider).endswith("-sandbox")


class Refused(Exception):
    """A provider refused the message for good: no other provider or try can help."""


Send = Callable[[OutboundEmail, str | None], Awaitable[str | None]]
# Several messages in one request (and their unsubscribe links) → their ids, in order.
SendMany = Callable[[list[OutboundEmail], list[str | None]], Awaitable[list[str]]]


@dataclass
class Channel:
    """One provider of the chain: `send(email, unsubscribe_url)` → the provider's id;
    `send_many` when the provider takes up to `batch_size` messages in one request."""

    name: str
    send: Send
    close: Callable[[], Awaitable[None]] | None = field(default=None)
    send_many: SendMany | None = None
    batch_size: int = 1


def _permanent_http(err: ProviderError) -> bool:
    # The message itself (an invalid address, a validation error). 401/403 (our key), 408,
    # 409 and 429 (limits) are about the account or the moment: another provider may do.
    return (
        err.status is not None
        and 400 <= err.status < 500
        and err.status not in {401, 403, 408, 409, 429}
    )


C = TypeVar("C", bound=BearerClient)


def _client(
    cls: type[C], provider: str, services: Services, tenant_id: int, credential: ResolvedCredential
) -> C:
    return cls(
        provider_registry(services).http(provider),
        credential.secrets.get("api_key", ""),
        base_url=credential.base_url,
        labels={"tenant": str(tenant_id), "source": credential.source.value},
        own_credential=credential.own,
        guard_url=credential.guard_url,
    )


def _channel_name(provider: str, services: Services, credential: ResolvedCredential) -> str:
    """`<provider>-sandbox` when a sandbox (ours, by its base URL too) took the mail: it
    was never delivered, so it is named so (and its body is readable)."""
    own_sandbox = bool(credential.base_url) and is_own_sandbox(
        services.settings, credential.base_url or ""
    )
    return f"{provider}-sandbox" if credential.is_sandbox or own_sandbox else provider


def _headers(email: OutboundEmail, unsubscribe_url: str | None) -> dict[str, str]:
    headers = {"Message-ID": email.message_id}
    if unsubscribe_url:
        headers.update(compose.unsubscribe_headers(unsubscribe_url))
    return headers


def _resend_channel(services: Services, tenant_id: int, credential: ResolvedCredential) -> Channel:
    client = _client(resend.ResendClient, resend.PROVIDER, services, tenant_id, credential)
    from_email = credential.secrets.get("from_email", "")

    def payload(email: OutboundEmail, unsubscribe_url: str | None) -> dict[str, Any]:
        return resend.email_payload(
            sender=str(compose.sender_for(email, from_email)),
            to=[str(r) for r in compose.to_list(email)],
            cc=[str(r) for r in compose.recipients(email.cc)],
            bcc=[str(r) for r in compose.recipients(email.bcc)],
            reply_to=[email.reply_to] if email.reply_to else (),
            subject=email.subject,
            html=email.html,
            text=email.text,
            headers=_headers(email, unsubscribe_url),
        )

    async def send(email: OutboundEmail, unsubscribe_url: str | None) -> str | None:
        try:
            sent = await client.send_prepared(
                payload(email, unsubscribe_url), idempotency_key=email.message_id
            )
        except ProviderError as err:
            if _permanent_http(err):
                raise Refused(str(err)) from None
            raise
        return sent.id

    async def send_many(emails: list[OutboundEmail], links: list[str | None]) -> list[str]:
        # The same messages ask with the same key: a retried batch is answered with the
        # first one's ids, never sent twice.
        key = (
            "batch-" + hashlib.sha256("\n".join(e.message_id for e in emails).encode()).hexdigest()
        )
        try:
            sent = await client.send_batch(
                [payload(e, link) for e, link in zip(emails, links, strict=True)],
                idempotency_key=key,
            )
        except ProviderError as err:
            if _permanent_http(err):
                raise Refused(str(err)) from None
            raise
        return [s.id for s in sent]

    return Channel(
        _channel_name("resend", services, credential),
        send,
        send_many=send_many,
        batch_size=resend.MAX_BATCH,
    )


class OutcomeUnknown(Exception):
    """The provider may have taken the message (a timeout after the request was written):
    trying the next provider now could send it twice, so this try stops here."""


def _sendgrid_channel(
    services: Services, tenant_id: int, credential: ResolvedCredential
) -> Channel:
    client = _client(sendgrid.SendGridClient, sendgrid.PROVIDER, services, tenant_id, credential)
    from_email = credential.secrets.get("from_email", "")

    async def send(email: OutboundEmail, unsubscribe_url: str | None) -> str | None:
        try:
            sent = await client.send_email(
                sender=compose.sender_for(email, from_email),
                to=[r.address() for r in compose.to_list(email)],
                cc=[r.address() for r in compose.recipients(email.cc)],
                bcc=[r.address() for r in compose.recipients(email.bcc)],
                reply_to=email.reply_to or None,
                subject=email.subject,
                html=email.html or None,
                text=email.text,
                headers=_headers(email, unsubscribe_url),
                # Every Event Webhook event repeats it: tracking finds the row directly.
                custom_args={SENDGRID_EMAIL_ARG: str(email.id)},
            )
        except ProviderError as err:
            if sendgrid.permanent(err):
                raise Refused(str(err)) from None
            if sendgrid.outcome_unknown(err):
                raise OutcomeUnknown(str(err)) from None
            raise
        return sent.id

    return Channel(_channel_name("sendgrid", services, credential), send)


def smtp_config(settings: Settings) -> smtp.SmtpConfig:
    """The operator's relay (EMAIL_HOST, ...)."""
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


def _tenant_smtp_config(settings: Settings, secrets: dict[str, str]) -> smtp.SmtpConfig:
    security = secrets.get("security", "auto")
    return smtp.SmtpConfig(
        host=secrets["host"],
        port=int(secrets.get("port") or 587),
        username=secrets.get("username", ""),
        password=secrets.get("password", ""),
        security=security if security in ("auto", "starttls", "tls", "none") else "auto",  # type: ignore[arg-type]
        timeout=settings.smtp_timeout_seconds,
    )


def _smtp_channel(services: Services, credential: ResolvedCredential) -> Channel:
    settings = services.settings
    if credential.own:
        # A tenant's relay: its address goes through the outbound guard at every connect.
        session = smtp.Session(
            _tenant_smtp_config(settings, credential.secrets), policy=settings.outbound_policy()
        )
        from_email = credential.secrets.get("from_email", "")
    else:
        session = smtp.Session(smtp_config(settings))
        from_email = ""

    async def send(email: OutboundEmail, unsubscribe_url: str | None) -> str | None:
        message = compose.build_message(
            email, from_email=from_email, unsubscribe_url=unsubscribe_url
        )
        try:
            await session.send(message)
        except ProviderError as err:
            if not err.retryable:
                raise Refused(str(err)) from None
            raise
        return None

    return Channel("smtp", send, session.close)


ChannelFactory = Callable[[Services, int, ResolvedCredential], Channel]
FACTORIES: dict[str, ChannelFactory] = {
    "resend": _resend_channel,
    "sendgrid": _sendgrid_channel,
    "smtp": lambda services, _tenant, credential: _smtp_channel(services, credential),
}


async def build_chain(services: Services, tenant_id: int) -> list[Channel]:
    """The tenant's channels in order (module docstring); empty when nothing is set up."""
    ctx = Context(services=services, request_id=f"mail-{uuid.uuid4().hex[:12]}")
    found: list[tuple[str, ResolvedCredential]] = []
    for provider in PROVIDERS:
        if provider not in FACTORIES:
            continue
        try:
            found.append((provider, await resolve_tenant_credential(ctx, provider, tenant_id)))
        except GatewayError:  # not configured (no key, no sandbox) or undecryptable
            continue
    for source in (CredentialSource.TENANT, CredentialSource.SYSTEM, CredentialSource.SANDBOX):
        chosen = [(p, c) for p, c in found if c.source == source]
        if chosen:
            return [FACTORIES[p](services, tenant_id, c) for p, c in chosen]
    return []


async def close_chain(chain: list[Channel]) -> None:
    for channel in chain:
        if channel.close is not None:
            try:
                await channel.close()
            except Exception:  # closing is best effort: the message outcome is recorded
                log.debug("closing a mail channel failed", exc_info=True)
