"""Sending: the jobs that hand queued messages to Twilio and record each outcome.

Twilio's Messages API has no idempotency key, so a send is made at most once per claim:

1. The message is claimed — QUEUED → SENDING with `claimed_at`, one more attempt — in a
   committed transaction before the call.
2. The call. Twilio's answer is recorded: ACCEPTED with its SID; FAILED with Twilio's code
   for a refusal of the message itself (21211 a bad number, 21610 an unsubscribed one —
   which also lists the number —, a bad template); back to QUEUED for a failure that a
   later try can fix (429, 5xx, an open breaker, our own outbound limit), retried with
   backoff until the last try fails it.
3. A message found SENDING (the worker died during the call, or the call timed out after
   the request was written) is first looked up at Twilio — its messages to the same
   number since the claim, with the same body — and recorded as sent when Twilio has it;
   only when Twilio has none is it sent again. So a killed worker never sends twice.

`messaging.send` takes one message; `messaging.send_batch` a bulk send's chunk of
BATCH_SIZE messages over one account, paced by the provider layer's outbound limit for
the account (`CONFIG.rate_limit`, OUTBOUND_RATE_LIMITS); a message that failed for now
gets a `messaging.send` job of its own, so one bad number never holds up the rest.
A queued message whose number opted out meanwhile fails without a provider call.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
from dataclasses import dataclass
from typing import Any

from tortoise.transactions import in_transaction

from kit.errors import GatewayError
from models.messaging import Channel, Message, MessageStatus, OptOutReason
from providers import twilio
from providers.errors import ProviderError
from resolvers.context import Services
from resolvers.jobs import JobContext, enqueue, job_handler
from resolvers.messaging.account import TwilioAccount, account_for
from resolvers.messaging.optout import opt_out, opted_out
from resolvers.messaging.outbox import (
    BATCH_JOB,
    REDACTED,
    SEALED_KIND,
    SEND_JOB,
    code_of,
    text_of,
)
from resolvers.messaging.tracking import TWILIO_STATUS, advance

log = logging.getLogger("switchboard.messaging")

BATCH_SIZE = 100
SEND_ATTEMPTS = 6
MAX_ERROR_CHARS = 2000
# How far before the claim a message Twilio lists may have been created (clock skew).
RECONCILE_SLACK = dt.timedelta(seconds=30)
OPTED_OUT_CODE = "OPTED_OUT"


def send_backoff(attempt: int) -> float:
    return float(min(15 * 2 ** (attempt - 1), 1800))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Outcome:
    status: MessageStatus  # ACCEPTED (or further), FAILED, QUEUED (for now), SENDING (unknown)
    sid: str | None = None
    error_code: str | None = None
    error: str | None = None
    segments: int | None = None


class TryAgain(Exception):
    """The send failed for now (or its outcome is unknown): the job retries with backoff."""


async def _claim(message: Message) -> bool:
    """QUEUED (or SENDING, resumed) → SENDING with one more attempt, committed before the
    call; False when another worker has it or it moved on. `claimed_at` keeps the first
    claim: a look-up covers every earlier try."""
    at = now()
    first = message.claimed_at or at
    async with in_transaction() as conn:
        claimed = (
            await Message.filter(id=message.id, status=message.status, attempts=message.attempts)
            .using_db(conn)
            .update(
                status=MessageStatus.SENDING.value,
                claimed_at=first,
                attempts=message.attempts + 1,
                updated_at=at,
            )
        )
    if claimed:
        message.status, message.claimed_at = MessageStatus.SENDING.value, first
        message.attempts += 1
    return bool(claimed)


def _to(message: Message) -> str:
    return twilio.address(message.recipient, whatsapp=message.channel == Channel.WHATSAPP.value)


def _created_at(value: str) -> dt.datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


async def _find_at_twilio(
    account: TwilioAccount, message: Message, text: str | None
) -> twilio.Message | None:
    """The message at Twilio when an earlier try's call went through (module docstring)."""
    since = (message.claimed_at or now()) - RECONCILE_SLACK
    # The newest messages to the number, filtered here by creation time: Twilio's DateSent
    # filter skips a message still queued (it has no date_sent yet).
    found = await account.client.list_messages(to=_to(message))
    for item in found:
        created = _created_at(item.date_created)
        if created is None or created < since:
            continue
        if text is not None and item.body != text:
            continue  # (a template's text is Twilio's: any message since the claim fits)
        if await Message.filter(provider_sid=item.sid).exclude(id=message.id).exists():
            continue  # another of our messages with the same text
        return item
    return None


def _template(
    services: Services, account: TwilioAccount, message: Message
) -> tuple[str | None, dict[str, str]]:
    """(Content SID, variables) to send: the message's own template, or for a
    verification code on WhatsApp the account's verification template with the code."""
    if message.content_sid:
        return message.content_sid, {str(k): str(v) for k, v in message.content_variables.items()}
    verification = account.credential.secrets.get("verification_content_sid")
    if message.kind == SEALED_KIND and message.channel == Channel.WHATSAPP.value and verification:
        code = code_of(services.settings, message)
        if code:
            return verification, {"1": code}
    return None, {}


async def _call(services: Services, account: TwilioAccount, message: Message, text: str) -> Outcome:
    channel = Channel(message.channel)
    content_sid, variables = _template(services, account, message)
    try:
        sender, service = account.sender(channel)
        sent = await account.client.send_message(
            to=_to(message),
            sender=sender,
            messaging_service_sid=service,
            body=None if content_sid else (text or None),
            media_urls=message.media_urls,
            content_sid=content_sid,
            content_variables=variables,
            status_callback=account.status_callback,
        )
    except ProviderError as err:
        if twilio.outcome_unknown(err):
            return Outcome(MessageStatus.SENDING, error=f"outcome unknown: {err}")
        if twilio.permanent(err):
            return Outcome(MessageStatus.FAILED, None, err.vendor_code, err.message)
        return Outcome(MessageStatus.QUEUED, None, err.vendor_code, str(err))
    except GatewayError as exc:  # no sender configured, a refused base URL
        return Outcome(MessageStatus.QUEUED, None, exc.code, exc.message)
    status = TWILIO_STATUS.get(sent.status, MessageStatus.ACCEPTED)
    return Outcome(status, sent.sid, segments=sent.num_segments)


async def attempt(
    services: Services, account: TwilioAccount, message: Message, *, look_up: bool
) -> Outcome:
    """One try for a claimed message (no store writes). `look_up`: an earlier try may have
    reached Twilio: ask Twilio before sending again."""
    text = text_of(services.settings, message)
    if look_up:
        try:
            templated = _template(services, account, message)[0] is not None
            earlier = await _find_at_twilio(account, message, None if templated else text)
        except ProviderError as err:
            return Outcome(MessageStatus.SENDING, error=f"could not look the message up: {err}")
        if earlier is not None:
            status = TWILIO_STATUS.get(earlier.status, MessageStatus.ACCEPTED)
            return Outcome(status, earlier.sid, segments=earlier.num_segments)
    return await _call(services, account, message, text)


async def record(
    message: Message, outcome: Outcome, *, provider: str | None, last_try: bool
) -> None:
    """Write one try's outcome and move the status."""
    status = outcome.status
    if status in (MessageStatus.QUEUED, MessageStatus.SENDING) and last_try:
        status = MessageStatus.FAILED
    fields: dict[str, Any] = {
        "provider": provider,
        "last_error": outcome.error[:MAX_ERROR_CHARS] if outcome.error else None,
    }
    if outcome.error_code:
        fields["error_code"] = outcome.error_code[:20]
    async with in_transaction() as conn:
        if status in (MessageStatus.QUEUED, MessageStatus.SENDING):
            # QUEUED: a later try sends it; SENDING: a later try looks it up first.
            await (
                Message.filter(id=message.id)
                .using_db(conn)
                .update(**fields, status=status.value, updated_at=now())
            )
            message.status = status.value
            return
        if outcome.sid:
            fields.update(provider_sid=outcome.sid, sent_at=now(), segments=outcome.segments)
        if message.kind == SEALED_KIND:
            fields["body"] = REDACTED  # the code is no longer needed here
        if not await advance(message, status, connection=conn, **fields):
            # A callback got there first (it outran this commit): keep its status, still
            # record the SID and the try.
            await Message.filter(id=message.id).using_db(conn).update(**fields)
        if outcome.error_code == twilio.UNSUBSCRIBED:
            await opt_out(
                message.tenant_id,
                message.recipient,
                OptOutReason.PROVIDER,
                detail="Twilio 21610: unsubscribed recipient",
                connection=conn,
            )


async def deliver(
    services: Services, message: Message, *, last_try: bool, account: TwilioAccount | None = None
) -> Outcome | None:
    """Claim and send one message; its outcome (None when it was not ours to send)."""
    if message.status not in (MessageStatus.QUEUED.value, MessageStatus.SENDING.value):
        return None  # sent or failed already (a repeated job)
    look_up = message.attempts > 0  # an earlier try was claimed: it may have gone
    if not await _claim(message):
        return None
    if await opted_out(message.tenant_id, [message.recipient]):
        outcome = Outcome(MessageStatus.FAILED, None, OPTED_OUT_CODE, "the number opted out")
        await record(message, outcome, provider=None, last_try=last_try)
        return outcome
    try:
        account = account or await account_for(services, message.tenant_id)
    except GatewayError as exc:  # not configured (no key, no sandbox) or undecryptable
        outcome = Outcome(MessageStatus.QUEUED, None, exc.code, exc.message)
    else:
        outcome = await attempt(services, account, message, look_up=look_up)
    await record(
        message, outcome, provider=None if account is None else account.name, last_try=last_try
    )
    return outcome


@job_handler(SEND_JOB, max_attempts=SEND_ATTEMPTS, backoff=send_backoff)
async def send_job(job: JobContext, payload: dict[str, Any]) -> None:
    message = await Message.get_or_none(id=int(payload["message_id"]))
    if message is None:
        return  # its tenant is gone
    if job.services is None:
        raise RuntimeError("messaging jobs need the process's services (gateway/worker.py)")
    outcome = await deliver(job.services, message, last_try=job.is_last_attempt)
    if outcome is not None and outcome.status in (MessageStatus.QUEUED, MessageStatus.SENDING):
        if not job.is_last_attempt:
            raise TryAgain(outcome.error)


@job_handler(BATCH_JOB, max_attempts=SEND_ATTEMPTS, backoff=send_backoff, timeout=1800)
async def send_batch_job(job: JobContext, payload: dict[str, Any]) -> None:
    """A chunk of a bulk send over one account; a message that failed for now goes on in
    a `messaging.send` job of its own."""
    if job.services is None:
        raise RuntimeError("messaging jobs need the process's services (gateway/worker.py)")
    ids = [int(i) for i in payload["message_ids"]]
    messages = await Message.filter(
        id__in=ids, status__in=[MessageStatus.QUEUED.value, MessageStatus.SENDING.value]
    ).order_by("id")
    if not messages:
        return
    try:
        account: TwilioAccount | None = await account_for(job.services, messages[0].tenant_id)
    except GatewayError:
        account = None  # each message records why
    for message in messages:
        outcome = await deliver(job.services, message, last_try=False, account=account)
        if outcome is not None and outcome.status in (
            MessageStatus.QUEUED,
            MessageStatus.SENDING,
        ):
            await enqueue(
                SEND_JOB,
                {"message_id": message.id},
                tenant_id=message.tenant_id,
                run_at=now() + dt.timedelta(seconds=send_backoff(1)),
            )
