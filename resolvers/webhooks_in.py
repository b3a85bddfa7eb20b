"""Incoming webhooks: verify, store in the inbox before answering, process in a job.

Which secret verifies a request:

- `POST /webhooks/{provider}/{token}` — a tenant's inbound configuration
  (`WebhookSource`, created with `createWebhookSource`). The token in the URL picks the
  source (stored as its SHA-256; the URL is shown once); the source holds the secret the
  vendor signs with, encrypted with the vault (`kit/vault.py`, `VAULT_KEYS`) because
  verifying needs the plaintext. Events are stored under that tenant.
- `POST /webhooks/{provider}` — the system-level secret for that provider from the
  `WEBHOOK_SYSTEM_SECRETS` setting (JSON object provider → secret): the sandboxes, tests,
  and single-tenant installs; and the key the gateway's own sandbox signs its callbacks
  with (`sandbox_secrets`, set by gateway/http/sandbox.py), so the embedded default
  receives its delivery events with no setting at all. Either one verifying is enough.
  Events are stored without a tenant. A provider with no system secret answers 404 here.

The verifier comes from the one registry in `kit/signing.py` (provider →
`Verifier`); an unknown provider is 404, a bad / stale / missing signature is 401
(`WEBHOOK_SIGNATURE_INVALID` with a `reason`) and stores nothing. An authentic event is
written to `WebhookInbox`, unique per (provider, source, vendor event id), together with
its processing job in one transaction, and only then answered 200. A re-delivery of a
stored event answers 200 (`duplicate: true`) and is not processed again.

The job (`webhooks.process_inbox`) runs the handler registered for the provider and
event type (`@inbox_handler("stripe", "payment_intent.*")`, glob patterns) in a
transaction with the inbox row locked, and marks it `processed`; with no handler the row
is marked `ignored`. A handler that raises is retried by the job queue (its writes undone
each time), then the row is `failed`; raising `PermanentFailure` fails it at once.
`replayWebhookEvent` runs any stored event again.

Rate limits (`throttle`, given by the HTTP route): counted once the source is known, per
source (`RATE_LIMIT_WEBHOOKS`), so one tenant's flood never uses another's budget;
requests to an unknown address are counted per client address, so junk sent to made-up
tokens cannot exhaust anybody's budget.
"""

from __future__ import annotations

import fnmatch
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, GatewayError, NotFound, require
from kit.security import hash_token, new_token
from kit.settings import Settings, get_settings
from kit.signing import (
    SignatureInvalid,
    VerifiedEvent,
    Verifier,
    generate_secret,
    get_verifier,
)
from kit.vault import vault_for
from models.tenancy import get_scoped, scoped
from models.webhooks import SYSTEM_SOURCE, InboxStatus, WebhookInbox, WebhookSource
from resolvers import inbox_store
from resolvers.context import Context
from resolvers.jobs import (
    JobContext,
    PermanentFailure,
    enqueue,
    job_handler,
    now,
)
from resolvers.operations import operation
from resolvers.pagination import Page, page_of

log = logging.getLogger("switchboard.webhooks.in")

PROCESS_JOB = inbox_store.PROCESS_JOB
TOKEN_PREFIX = "whk_"
AUDIT_HEADERS = ("content-type", "user-agent")

InboxHandler = Callable[..., Awaitable[None]]  # (event, connection[, *, settings])


class PayloadTooLarge(GatewayError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


# Handler registry ------------------------------------------------------------------------

_handlers: dict[tuple[str, str], InboxHandler] = {}
H = TypeVar("H", bound=Callable[..., Awaitable[None]])
# Handlers that also take the running process's settings (`settings=` keyword).
_with_settings: set[InboxHandler] = set()


def inbox_handler(
    provider: str, event_type: str = "*", *, settings: bool = False
) -> Callable[[H], H]:
    """Register `async def handler(event: WebhookInbox, connection) -> None` (with
    `settings=True`: `handler(event, connection, *, settings)`, given the worker's
    settings).

    It runs in the transaction that marks the event processed: write with
    `using_db=connection` (or `enqueue(..., connection=connection)`) so the effect and the
    mark commit together. `event_type` may be a glob (`invoice.*`, `*`); the most specific
    (longest) matching pattern wins.
    """

    def register(fn: H) -> H:
        _handlers[(provider, event_type)] = fn
        if settings:
            _with_settings.add(fn)
        return fn

    return register


def find_handler(provider: str, event_type: str) -> InboxHandler | None:
    exact = _handlers.get((provider, event_type))
    if exact is not None:
        return exact
    matches = [
        (len(pattern), fn)
        for (p, pattern), fn in _handlers.items()
        if p == provider and fnmatch.fnmatchcase(event_type, pattern)
    ]
    return max(matches, key=lambda m: m[0])[1] if matches else None


# Receiving -------------------------------------------------------------------------------


@dataclass
class Received:
    inbox: WebhookInbox | None  # None: a handshake, answered and not stored
    duplicate: bool
    answer: dict[str, Any] | None = None  # what to answer instead of the receipt


async def _secrets_for(
    settings: Settings,
    provider: str,
    token: str | None,
    sandbox_secrets: Mapping[str, str] | None = None,
) -> tuple[list[str], int | None, str]:
    """(secrets, any of which may verify; tenant id; source key) for this URL, or NOT_FOUND."""
    if token is None:
        found = [
            settings.system_webhook_secret(provider),
            settings.signing_secret_of(provider),
            (sandbox_secrets or {}).get(provider),
        ]
        secrets = list(dict.fromkeys(s for s in found if s))
        if not secrets:
            raise NotFound("No webhook endpoint for this provider.")
        return secrets, None, SYSTEM_SOURCE
    source = await WebhookSource.filter(
        token_hash=hash_token(token), provider=provider, disabled_at=None
    ).first()
    if source is None:
        raise NotFound("No webhook endpoint at this address.")
    return (
        [vault_for(settings.vault_keys).decrypt(source.secret_encrypted)],
        source.tenant_id,
        (f"src:{source.id}"),
    )


Throttle = Callable[[str | None], Awaitable[None]]
# The certificate at a URL a vendor names in its signature headers (PayPal), as PEM bytes;
# it refuses (SignatureInvalid) a URL that is not the vendor's.
CertificateFetcher = Callable[[str, str], Awaitable[bytes]]


async def receive(
    settings: Settings,
    provider: str,
    token: str | None,
    headers: Mapping[str, str],
    raw_body: bytes,
    *,
    throttle: Throttle | None = None,
    sandbox_secrets: Mapping[str, str] | None = None,
    url: str | None = None,
    certificates: CertificateFetcher | None = None,
) -> Received:
    """Verify and store one incoming webhook (the HTTP route's whole job).

    `throttle(source_key)` is awaited once the address is resolved: with the source's
    key, or None for an unknown address (it raises RateLimited when over budget).
    `sandbox_secrets`: provider → the secret the gateway's own sandbox signs with, also
    accepted at the system address. `url`: the public URL the request was addressed to,
    for vendors that sign it (Twilio). `certificates(provider, url)`: the certificate a
    vendor that signs with one names (PayPal)."""
    verifier = get_verifier(provider)
    if verifier is None:
        raise NotFound("Unknown webhook provider.")
    limit = settings.webhook_max_body_bytes
    if len(raw_body) > limit:
        raise PayloadTooLarge(f"Webhook body is larger than {limit} bytes.", limit=limit)
    try:
        secrets, tenant_id, source_key = await _secrets_for(
            settings, provider, token, sandbox_secrets
        )
    except NotFound:
        if throttle is not None:
            await throttle(None)
        raise
    if throttle is not None:
        await throttle(source_key)
    certificate = None
    if verifier.needs_certificate:
        certificate = await _certificate(verifier, headers, certificates)
    event, secret = _verify_any(verifier, headers, raw_body, secrets, url, certificate)
    answer = verifier.challenge(event, secret)
    if answer is not None:
        return Received(None, duplicate=False, answer=answer)
    audit = {
        name: headers[name]
        for name in (*AUDIT_HEADERS, *verifier.audit_headers)
        if headers.get(name) is not None
    }
    row = WebhookInbox(
        tenant_id=tenant_id,
        provider=provider,
        source_key=source_key,
        event_id=event.event_id,
        event_type=event.event_type,
        payload=event.payload,
        headers=audit,
    )
    if not await inbox_store.store(row):
        existing = await WebhookInbox.filter(
            provider=provider, source_key=source_key, event_id=event.event_id
        ).first()
        if existing is None:  # pragma: no cover - a unique violation means the row exists
            raise NotFound("Webhook event not found.")
        return Received(existing, duplicate=True)
    return Received(row, duplicate=False)


def _verify_any(
    verifier: Verifier,
    headers: Mapping[str, str],
    raw_body: bytes,
    secrets: list[str],
    url: str | None = None,
    certificate: bytes | None = None,
) -> tuple[VerifiedEvent, str]:
    """The event verified by the first secret that fits, and that secret; else the last
    refusal."""
    refusal: SignatureInvalid | None = None
    for secret in secrets:
        try:
            if verifier.signs_url:
                return verifier.verify(headers, raw_body, secret, url=url), secret  # type: ignore[call-arg]
            if verifier.needs_certificate:
                event = verifier.verify(headers, raw_body, secret, certificate=certificate)  # type: ignore[call-arg]
                return event, secret
            return verifier.verify(headers, raw_body, secret), secret
        except SignatureInvalid as exc:
            refusal = exc
    assert refusal is not None  # secrets is never empty
    raise refusal


async def _certificate(
    verifier: Verifier, headers: Mapping[str, str], certificates: CertificateFetcher | None
) -> bytes:
    url = (headers.get(verifier.certificate_header) or "").strip()
    if not url or len(url) > 2000:
        raise SignatureInvalid("MISSING_CERTIFICATE")
    if certificates is None:
        raise SignatureInvalid("CERTIFICATE_UNAVAILABLE")
    return await certificates(verifier.name, url)


# Processing ------------------------------------------------------------------------------


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()[:4000]


@job_handler(PROCESS_JOB, max_attempts=5)
async def process_inbox(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Run the event's handler once; a re-run of a finished job does nothing."""
    failure: Exception | None = None
    async with in_transaction() as conn:
        row = (
            await WebhookInbox.filter(id=int(payload["inbox_id"]))
            .using_db(conn)
            .select_for_update()
            .first()
        )
        if row is None or row.status != InboxStatus.RECEIVED.value:
            return
        row.attempts += 1
        handler = find_handler(row.provider, row.event_type)
        if handler is None:
            row.status = InboxStatus.IGNORED.value
            row.processed_at = now()
        else:
            try:
                async with conn._in_transaction() as inner:  # a savepoint: undo only the handler
                    if handler in _with_settings:
                        current = ctx.settings or get_settings()
                        await handler(row, inner, settings=current)  # type: ignore[call-arg]
                    else:
                        await handler(row, inner)
            except Exception as exc:
                log.warning("webhook %s (%s) handler failed", row.id, row.event_type, exc_info=True)
                row.error = _error_text(exc)
                if ctx.is_last_attempt or isinstance(exc, PermanentFailure):
                    row.status = InboxStatus.FAILED.value
                else:
                    failure = exc
            else:
                row.status = InboxStatus.PROCESSED.value
                row.processed_at = now()
                row.error = None  # type: ignore[assignment]
        await row.save(using_db=conn, update_fields=["status", "attempts", "error", "processed_at"])
    if failure is not None:
        raise failure  # the queue retries with backoff; the row stays `received`


# GraphQL-facing --------------------------------------------------------------------------

INBOX_STATUSES = {s.value for s in InboxStatus}


@operation("webhooks:inbox")
async def list_inbox(
    ctx: Context,
    *,
    provider: str | None,
    status: str | None,
    first: int | None,
    after: str | None,
) -> Page[WebhookInbox]:
    principal = ctx.require_principal()
    qs = WebhookInbox.filter(tenant_id=principal.tenant_id)
    if provider:
        qs = qs.filter(provider=provider)
    if status is not None:
        require(status in INBOX_STATUSES, "status", "is not an inbox status")
        qs = qs.filter(status=status)
    return await page_of(ctx, qs, first=first, after=after)


async def get_inbox_event(ctx: Context, inbox_id: int) -> WebhookInbox:
    principal = ctx.require("webhooks:inbox")
    row = await WebhookInbox.filter(id=inbox_id, tenant_id=principal.tenant_id).first()
    if row is None:
        raise NotFound("Webhook event not found.")
    return row


async def load_inbox_events(ctx: Context, ids: list[int]) -> dict[int, WebhookInbox]:
    principal = ctx.require("webhooks:inbox")
    rows = await WebhookInbox.filter(id__in=ids, tenant_id=principal.tenant_id)
    return {r.id: r for r in rows}


@operation("webhooks:inbox")
async def replay_event(ctx: Context, *, inbox_id: int) -> WebhookInbox:
    """Process a stored event again (whatever its status), in a new job."""
    principal = ctx.require_principal()
    async with in_transaction() as conn:
        row = (
            await WebhookInbox.filter(id=inbox_id, tenant_id=principal.tenant_id)
            .using_db(conn)
            .select_for_update()
            .first()
        )
        if row is None:
            raise NotFound("Webhook event not found.")
        row.status = InboxStatus.RECEIVED.value
        row.error = None  # type: ignore[assignment]
        row.processed_at = None
        await row.save(using_db=conn, update_fields=["status", "error", "processed_at"])
        await enqueue(
            PROCESS_JOB, {"inbox_id": row.id}, tenant_id=principal.tenant_id, connection=conn
        )
    return row


# Inbound configurations (sources) ---------------------------------------------------------


@dataclass
class CreatedSource:
    source: WebhookSource
    url: str  # shown once: the token in it is stored hashed
    secret: str | None  # the generated secret, shown once; None when the caller gave one


def source_url(settings: Settings, provider: str, token: str) -> str:
    return f"{settings.base_url}/webhooks/{provider}/{token}"


@operation("webhooks:manage")
async def create_source(
    ctx: Context, *, provider: str, secret: str | None, description: str | None
) -> CreatedSource:
    principal = ctx.require_principal()
    verifier = get_verifier(provider)
    if verifier is None:
        raise BadUserInput(
            "provider: is not a webhook provider",
            details={"provider": "is not a webhook provider"},
        )
    description = (description or "").strip()
    require(len(description) <= 300, "description", "must be at most 300 characters")
    generated = None
    if secret is None or not secret.strip():
        # A vendor that hands over its own key (SendGrid's public key) has nothing for us
        # to generate: the source cannot verify anything without that key.
        require(verifier.generates_secret, "secret", f"is required: {verifier.secret_hint}")
        generated = secret = generate_secret()
    secret = secret.strip()
    require(8 <= len(secret) <= 1000, "secret", "must be 8 to 1000 characters")
    try:
        verifier.check_secret(secret)
    except ValueError:
        raise BadUserInput("Invalid secret.", details={"secret": verifier.secret_hint}) from None
    token = new_token(TOKEN_PREFIX, 24)
    source = await WebhookSource.create(
        tenant_id=principal.tenant_id,
        provider=provider,
        description=description,
        token_hash=hash_token(token),
        token_prefix=token[:12],
        secret_encrypted=vault_for(ctx.settings.vault_keys).encrypt(secret),
    )
    return CreatedSource(source, source_url(ctx.settings, provider, token), generated)


@operation("webhooks:manage")
async def list_sources(
    ctx: Context, *, first: int | None, after: str | None
) -> Page[WebhookSource]:
    principal = ctx.require_principal()
    return await page_of(ctx, scoped(WebhookSource, principal.tenant_id), first=first, after=after)


@operation("webhooks:manage")
async def delete_source(ctx: Context, *, source_id: int) -> int:
    """Remove an inbound configuration; its URL answers 404 from now on (events stay)."""
    principal = ctx.require_principal()
    source = await get_scoped(WebhookSource, principal.tenant_id, source_id)
    await source.delete()
    return source_id
