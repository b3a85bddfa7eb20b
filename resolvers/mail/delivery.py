"""Sending: the jobs that take queued messages through the provider chain
(resolvers/mail/chain.py) and record each outcome (resolvers/mail/tracking.py).

- `mail.send` (one message): one try of the chain; when every provider failed
  transiently the job raises and the queue retries it with its backoff; its last try
  fails the message.
- `mail.send_batch` (a bulk send's chunk): the chain is built once and an SMTP connection
  is kept for the whole chunk; outcomes are written in groups. A message that failed
  transiently gets a `mail.send` job of its own for the next try, so one bad address
  never holds up the rest.

A queued message whose address was suppressed after it was queued fails without a
provider call.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from kit.settings import Settings
from models.mail import EmailStatus, OutboundEmail
from providers.errors import ProviderError
from resolvers.context import Services
from resolvers.events import emit_many
from resolvers.jobs import JobContext, enqueue, job_handler
from resolvers.mail.chain import Channel, OutcomeUnknown, Refused, build_chain, close_chain
from resolvers.mail.outbox import SEND_JOB, event_data
from resolvers.mail.suppression import suppressed
from resolvers.mail.tracking import advance

log = logging.getLogger("switchboard.mail")

BATCH_JOB = "mail.send_batch"
BATCH_SIZE = 100  # messages per batch job
RECORD_EVERY = 50  # outcomes written per transaction in a batch
MAX_ERROR_CHARS = 2000
SEND_ATTEMPTS = 8
UNSUBSCRIBE_PATH = "/mail/unsubscribe/"


def send_backoff(attempt: int) -> float:
    return float(min(30 * 2 ** (attempt - 1), 3600))


def unsubscribe_link(settings: Settings, token: str) -> str:
    """The one-click unsubscribe URL of a broadcast's token (gateway/http/mail.py)."""
    return f"{settings.base_url}{UNSUBSCRIBE_PATH}{token}"


def unsubscribe_url(settings: Settings, email: OutboundEmail) -> str | None:
    return unsubscribe_link(settings, email.unsubscribe_token) if email.unsubscribe_token else None


@dataclass
class Outcome:
    status: EmailStatus  # SENT, FAILED, or QUEUED (every provider failed for now)
    provider: str | None = None
    error: str | None = None
    provider_message_id: str | None = None


async def attempt(settings: Settings, chain: list[Channel], email: OutboundEmail) -> Outcome:
    """One try of the chain for `email` (no store access)."""
    errors: list[str] = []
    link = unsubscribe_url(settings, email)
    for channel in chain:
        try:
            provider_id = await channel.send(email, link)
        except Refused as exc:
            log.warning("mail refused", extra={"email_id": email.id, "provider": channel.name})
            return Outcome(EmailStatus.FAILED, channel.name, f"{channel.name}: {exc}")
        except OutcomeUnknown as exc:
            # It may have gone: no other provider now (a second copy); a later try may.
            errors.append(f"{channel.name}: outcome unknown: {exc}")
            break
        except ProviderError as err:
            errors.append(f"{channel.name}: {err}")
            log.info("mail provider failed", extra={"email_id": email.id, "provider": channel.name})
            continue
        return Outcome(EmailStatus.SENT, channel.name, None, provider_id)
    return Outcome(EmailStatus.QUEUED, None, "; ".join(errors) or "no email provider is configured")


async def record(
    email: OutboundEmail, outcome: Outcome, *, last_try: bool, connection: BaseDBAsyncClient
) -> None:
    """Write one try's outcome (attempts, provider, error) and move the status."""
    status = outcome.status
    if status == EmailStatus.QUEUED and last_try:
        status = EmailStatus.FAILED
    fields: dict[str, Any] = {
        "attempts": email.attempts + 1,
        "provider": outcome.provider,
        "last_error": outcome.error[:MAX_ERROR_CHARS] if outcome.error else None,
    }
    email.attempts += 1
    if status == EmailStatus.QUEUED:
        await (
            OutboundEmail.filter(id=email.id)
            .using_db(connection)
            .update(**fields, updated_at=dt.datetime.now(dt.UTC))
        )
        return
    if status == EmailStatus.SENT:
        fields.update(
            provider_message_id=outcome.provider_message_id, sent_at=dt.datetime.now(dt.UTC)
        )
    if not await advance(email, status, connection=connection, **fields):
        # A delivery webhook got there first (it outran this commit): keep its status,
        # still record who took the message and the try.
        await OutboundEmail.filter(id=email.id).using_db(connection).update(**fields)


async def _suppressed_outcome(email: OutboundEmail) -> Outcome | None:
    hit = await suppressed(email.tenant_id, email.addresses())
    if not hit:
        return None
    return Outcome(EmailStatus.FAILED, None, f"suppressed: {', '.join(sorted(hit))}")


class AllProvidersFailed(Exception):
    """Every provider failed transiently: the job retries with its backoff."""


async def deliver(services: Services, email: OutboundEmail, *, last_try: bool) -> None:
    """One try of the chain for one QUEUED message, recorded."""
    outcome = await _suppressed_outcome(email)
    if outcome is None:
        chain = await build_chain(services, email.tenant_id)
        try:
            outcome = await attempt(services.settings, chain, email)
        finally:
            await close_chain(chain)
    async with in_transaction() as conn:
        await record(email, outcome, last_try=last_try, connection=conn)
    if outcome.status == EmailStatus.QUEUED and not last_try:
        raise AllProvidersFailed(outcome.error)


@job_handler(SEND_JOB, max_attempts=SEND_ATTEMPTS, backoff=send_backoff)
async def send_job(job: JobContext, payload: dict[str, Any]) -> None:
    email = await OutboundEmail.get_or_none(id=int(payload["email_id"]))
    if email is None or email.status != EmailStatus.QUEUED.value:
        return  # sent or failed already (a repeated job), or its tenant is gone
    if job.services is None:
        raise RuntimeError("mail jobs need the process's services (gateway/worker.py)")
    await deliver(job.services, email, last_try=job.is_last_attempt)


@job_handler(BATCH_JOB, max_attempts=SEND_ATTEMPTS, backoff=send_backoff, timeout=900)
async def send_batch_job(job: JobContext, payload: dict[str, Any]) -> None:
    """A chunk of a bulk send over one chain (one SMTP connection)."""
    if job.services is None:
        raise RuntimeError("mail jobs need the process's services (gateway/worker.py)")
    services = job.services
    ids = [int(i) for i in payload["email_ids"]]
    emails = await OutboundEmail.filter(id__in=ids, status=EmailStatus.QUEUED.value).order_by("id")
    if not emails:
        return
    tenant_id = emails[0].tenant_id
    blocked = await suppressed(tenant_id, [a for e in emails for a in e.addresses()])
    chain = await build_chain(services, tenant_id)
    done: list[tuple[OutboundEmail, Outcome]] = []
    pending: list[OutboundEmail] = []
    for email in emails:
        hit = blocked.intersection(a.lower() for a in email.addresses())
        if hit:
            reason = f"suppressed: {', '.join(sorted(hit))}"
            done.append((email, Outcome(EmailStatus.FAILED, None, reason)))
        else:
            pending.append(email)
    try:
        pending = await _send_many(
            services.settings, chain, pending, done, last_try=job.is_last_attempt
        )
        for email in pending:
            done.append((email, await attempt(services.settings, chain, email)))
            if len(done) >= RECORD_EVERY:
                await _record_all(done)
                done = []
    finally:
        await close_chain(chain)
        await _record_all(done)


async def _send_many(
    settings: Settings,
    chain: list[Channel],
    pending: list[OutboundEmail],
    done: list[tuple[OutboundEmail, Outcome]],
    *,
    last_try: bool,
) -> list[OutboundEmail]:
    """Hand `pending` to the chain's first provider in requests of its batch size when it
    takes several messages at once (Resend's batch: one request against the account's rate
    limit instead of one per message); what it took goes to `done`.

    A batch refused as a whole (one bad message) goes message by message through the whole
    chain: nothing of it was sent. A batch that failed otherwise may have been sent (a 5xx
    or a timeout can hide a success): the job is tried again later, where the batch's
    idempotency key makes a repeat harmless — until its last try, which goes message by
    message (through the rest of the chain too)."""
    first = chain[0] if chain else None
    if first is None or first.send_many is None or len(pending) < 2:
        return pending
    for start in range(0, len(pending), first.batch_size):
        group = pending[start : start + first.batch_size]
        try:
            ids = await first.send_many(group, [unsubscribe_url(settings, e) for e in group])
        except (Refused, ProviderError, OutcomeUnknown) as exc:
            log.info(
                "a batch send failed; one by one",
                extra={"provider": first.name, "error": str(exc)[:200]},
            )
            return pending[start:]
        done.extend(
            (email, Outcome(EmailStatus.SENT, first.name, None, provider_id))
            for email, provider_id in zip(group, ids, strict=True)
        )
    return []


async def _record_all(done: list[tuple[OutboundEmail, Outcome]]) -> None:
    """Write a group of a batch's outcomes in one transaction. The common case — messages
    still QUEUED that a provider took — is one UPDATE and one insert of their `email.sent`
    events; the rest (refusals, failures for now, a message a delivery webhook moved on
    already) goes one by one through `record`."""
    if not done:
        return
    async with in_transaction() as conn:
        taken = [(e, o) for e, o in done if o.status == EmailStatus.SENT]
        # Locked so a delivery webhook cannot move them between this read and the write.
        still_queued = set(
            await OutboundEmail.filter(
                id__in=[e.id for e, _ in taken], status=EmailStatus.QUEUED.value
            )
            .select_for_update()
            .using_db(conn)
            .values_list("id", flat=True)
        )
        at = dt.datetime.now(dt.UTC)
        grouped: list[OutboundEmail] = []
        for email, outcome in done:
            if outcome.status == EmailStatus.SENT and email.id in still_queued:
                email.status = EmailStatus.SENT.value
                email.attempts += 1
                email.provider = outcome.provider
                email.provider_message_id = outcome.provider_message_id
                email.last_error = None  # type: ignore[assignment]  # a nullable column
                email.sent_at = email.status_changed_at = email.updated_at = at
                grouped.append(email)
                continue
            await record(email, outcome, last_try=False, connection=conn)
            if outcome.status == EmailStatus.QUEUED:  # its next try, on its own
                await enqueue(
                    SEND_JOB,
                    {"email_id": email.id},
                    tenant_id=email.tenant_id,
                    run_at=at + dt.timedelta(seconds=send_backoff(1)),
                    connection=conn,
                )
        if grouped:
            await OutboundEmail.bulk_update(grouped, fields=_SENT_FIELDS, using_db=conn)
            await emit_many(
                grouped[0].tenant_id,
                [("email.sent", event_data(e)) for e in grouped],
                connection=conn,
            )


_SENT_FIELDS = (
    "status",
    "attempts",
    "provider",
    "provider_message_id",
    "last_error",
    "sent_at",
    "status_changed_at",
    "updated_at",
)
