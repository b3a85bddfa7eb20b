"""`sendSms`, `sendWhatsApp` and `sendBulkSms`: what a user of the API sends.

Numbers are checked (E.164 with `phonenumbers`, the opt-out list) and bodies too (length,
NUL and other control characters, media URLs, template variables) before anything is
written; then the rows and jobs are written in one transaction and the answer names them —
the sending happens in jobs (resolvers/messaging/delivery.py).

A bulk send writes one message per recipient (with its own variables in `{{name}}`
placeholders of the shared body), grouped in an `SmsBatch`, sent by `messaging.send_batch`
jobs of BATCH_SIZE messages, paced by the provider layer's outbound limit for the account.
Per-recipient results say QUEUED, OPTED_OUT, INVALID (with the coded reason) or DUPLICATE.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, GatewayError
from kit.phones import e164
from kit.text import text_problem
from models.messaging import Channel, Direction, Message, SmsBatch
from resolvers.context import Context
from resolvers.events import emit_many
from resolvers.jobs import enqueue
from resolvers.messaging.delivery import BATCH_SIZE
from resolvers.messaging.optout import opted_out, refuse
from resolvers.messaging.outbox import BATCH_JOB, event_data, queue
from resolvers.operations import operation

MAX_BODY_CHARS = 1600  # Twilio's limit for one message (10 segments)
MAX_MEDIA = 10
MAX_URL_CHARS = 2000
MAX_BULK_RECIPIENTS = 1000
MAX_VARIABLES = 50
SENDS_PER_TENANT = "1000/hour"
BULK_SENDS_PER_TENANT = "20/hour"
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
_CONTENT_SID = re.compile(r"^HX[0-9a-f]{32}$")
_VARIABLE_NAME = re.compile(r"^[A-Za-z0-9_]{1,40}$")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]{1,40})\s*\}\}")


@dataclass
class TemplateIn:
    """An approved WhatsApp template (Twilio Content API) and its variables."""

    content_sid: str
    variables: Any = None


@dataclass
class SendSmsIn:
    to: str
    body: str


@dataclass
class SendWhatsAppIn:
    to: str
    body: str | None = None
    media_urls: list[str] = field(default_factory=list)
    template: TemplateIn | None = None


@dataclass
class BulkRecipientIn:
    to: str
    variables: Any = None


@dataclass
class SendBulkSmsIn:
    body: str
    recipients: list[BulkRecipientIn] = field(default_factory=list)
    variables: Any = None


def check_body(value: str | None, field_name: str, *, required: bool = True) -> str:
    if value is None or value == "":
        if required:
            raise BadUserInput("A message needs a body.", details={field_name: "is required"})
        return ""
    if len(value) > MAX_BODY_CHARS:
        raise BadUserInput(
            "The message is too long.", details={field_name: f"at most {MAX_BODY_CHARS} characters"}
        )
    problem = text_problem(value)
    if problem:
        raise BadUserInput(f"{field_name} {problem}.", details={field_name: problem})
    if not value.strip():
        raise BadUserInput("A message needs a body.", details={field_name: "is blank"})
    return value


def check_media(urls: list[str]) -> list[str]:
    if len(urls) > MAX_MEDIA:
        raise BadUserInput("Too many media.", details={"mediaUrls": f"at most {MAX_MEDIA}"})
    for index, url in enumerate(urls):
        if not isinstance(url, str) or len(url) > MAX_URL_CHARS or not _URL.match(url):
            raise BadUserInput(
                "Invalid media URL.", details={f"mediaUrls.{index}": "must be an http(s) URL"}
            )
    return list(urls)


def check_variables(raw: Any, field_name: str) -> dict[str, str]:
    """An object of at most MAX_VARIABLES names to text (numbers become text)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_VARIABLES:
        raise BadUserInput(
            "Invalid variables.",
            details={field_name: f"an object of at most {MAX_VARIABLES} text values"},
        )
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _VARIABLE_NAME.match(key):
            raise BadUserInput(
                "Invalid variable name.", details={field_name: "names are letters, digits, _"}
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise BadUserInput("Invalid variable.", details={f"{field_name}.{key}": "not text"})
        text = str(value)
        problem = text_problem(text) if text else None
        if problem or len(text) > MAX_BODY_CHARS:
            raise BadUserInput(
                "Invalid variable.", details={f"{field_name}.{key}": problem or "too long"}
            )
        out[key] = text
    return out


async def _limit(ctx: Context, spec: str, name: str, tenant_id: int, message: str) -> None:
    if ctx.settings.rate_limit_enabled:
        await ctx.services.limiter.enforce(spec, name, str(tenant_id), message=message)


async def _refuse_opted_out(tenant_id: int, number: str) -> None:
    if await opted_out(tenant_id, [number]):
        raise refuse(number, "to")


@operation("messaging:send")
async def send_sms(ctx: Context, message: SendSmsIn) -> Message:
    """Queue one SMS; PHONE_OPTED_OUT when the number replied STOP."""
    principal = ctx.require("messaging:send")
    to = e164(message.to, "to")
    body = check_body(message.body, "body")
    await _refuse_opted_out(principal.tenant_id, to)
    await _limit(ctx, SENDS_PER_TENANT, "messaging", principal.tenant_id, "Too many messages.")
    return await queue(
        tenant_id=principal.tenant_id,
        channel=Channel.SMS,
        kind="direct",
        recipient=to,
        body=body,
        author_id=principal.user_id,
    )


def check_whatsapp(message: SendWhatsAppIn) -> tuple[str, list[str], str | None, dict[str, str]]:
    """(body, media URLs, template SID, template variables), checked."""
    media = check_media(message.media_urls)
    if message.template is not None:
        if message.body or media:
            raise BadUserInput(
                "Give a template or a body and media, not both.",
                details={"template": "or body/mediaUrls"},
            )
        sid = message.template.content_sid
        if not isinstance(sid, str) or not _CONTENT_SID.match(sid):
            raise BadUserInput(
                "Invalid template.", details={"template.contentSid": "must be an HX… Content SID"}
            )
        variables = check_variables(message.template.variables, "template.variables")
        return "", [], sid, variables
    body = check_body(message.body, "body", required=not media)
    return body, media, None, {}


@operation("messaging:send")
async def send_whatsapp(ctx: Context, message: SendWhatsAppIn) -> Message:
    """Queue one WhatsApp message: text, media, or an approved template."""
    principal = ctx.require("messaging:send")
    to = e164(message.to, "to")
    body, media, content_sid, variables = check_whatsapp(message)
    await _refuse_opted_out(principal.tenant_id, to)
    await _limit(ctx, SENDS_PER_TENANT, "messaging", principal.tenant_id, "Too many messages.")
    return await queue(
        tenant_id=principal.tenant_id,
        channel=Channel.WHATSAPP,
        kind="direct",
        recipient=to,
        body=body,
        media_urls=media,
        content_sid=content_sid,
        content_variables=variables,
        author_id=principal.user_id,
    )


@dataclass
class BulkResult:
    to: str
    status: str  # QUEUED, OPTED_OUT, INVALID, DUPLICATE
    message: Message | None = None
    error: str | None = None
    code: str | None = None


@dataclass
class BulkOutcome:
    batch: SmsBatch
    results: list[BulkResult]


def render(body: str, variables: dict[str, str]) -> str:
    """`{{name}}` placeholders filled; one without a value is an error for the recipient."""
    missing = [m for m in _PLACEHOLDER.findall(body) if m not in variables]
    if missing:
        raise BadUserInput(
            f"No value for {missing[0]}.", details={"variables": f"{missing[0]} is missing"}
        )
    return _PLACEHOLDER.sub(lambda m: variables[m.group(1)], body)


@operation("messaging:send_bulk")
async def send_bulk_sms(ctx: Context, request: SendBulkSmsIn) -> BulkOutcome:
    """One SMS per recipient (up to 1,000), each with its own variables; results per
    recipient, in the order given."""
    principal = ctx.require("messaging:send_bulk")
    if not request.recipients:
        raise BadUserInput("A bulk send needs recipients.", details={"recipients": "is empty"})
    if len(request.recipients) > MAX_BULK_RECIPIENTS:
        raise BadUserInput(
            "Too many recipients.", details={"recipients": f"at most {MAX_BULK_RECIPIENTS}"}
        )
    body = check_body(request.body, "body")
    shared = check_variables(request.variables, "variables")
    tenant_id = principal.tenant_id
    results: list[BulkResult] = []
    wanted: list[tuple[int, str, str]] = []  # (result index, number, body)
    seen: set[str] = set()
    for index, item in enumerate(request.recipients):
        raw = str(item.to)[:64]
        try:
            number = e164(item.to, f"recipients.{index}.to")
            text = check_body(
                render(body, {**shared, **check_variables(item.variables, f"recipients.{index}")}),
                f"recipients.{index}.body",
            )
        except GatewayError as exc:
            results.append(BulkResult(raw, "INVALID", error=exc.message, code=exc.code))
            continue
        if number in seen:
            results.append(BulkResult(number, "DUPLICATE"))
            continue
        seen.add(number)
        results.append(BulkResult(number, "QUEUED"))
        wanted.append((len(results) - 1, number, text))
    blocked = await opted_out(tenant_id, [n for _, n, _ in wanted])
    for index, number, _ in wanted:
        if number in blocked:
            results[index] = BulkResult(
                number, "OPTED_OUT", error="opted out (replied STOP)", code="PHONE_OPTED_OUT"
            )
    wanted = [w for w in wanted if w[1] not in blocked]
    await _limit(ctx, BULK_SENDS_PER_TENANT, "messaging-bulk", tenant_id, "Too many bulk sends.")
    async with in_transaction() as conn:
        batch = await SmsBatch.create(
            tenant_id=tenant_id,
            total=len(request.recipients),
            queued=len(wanted),
            created_by_id=principal.user_id,
            using_db=conn,
        )
        rows = [
            Message(
                tenant_id=tenant_id,
                direction=Direction.OUTBOUND.value,
                channel=Channel.SMS.value,
                kind="bulk",
                recipient=number,
                body=text,
                batch_id=batch.id,
                author_id=principal.user_id,
            )
            for _, number, text in wanted
        ]
        await Message.bulk_create(rows, using_db=conn)
        # bulk_create does not give ids back on every backend: read them by number (one
        # message per number in a batch).
        ids = dict(
            await Message.filter(batch_id=batch.id).using_db(conn).values_list("recipient", "id")
        )
        for row, (index, number, _) in zip(rows, wanted, strict=True):
            row.id = ids[number]
            results[index].message = row
        for start in range(0, len(rows), BATCH_SIZE):
            chunk = [row.id for row in rows[start : start + BATCH_SIZE]]
            await enqueue(BATCH_JOB, {"message_ids": chunk}, tenant_id=tenant_id, connection=conn)
        await emit_many(
            tenant_id, [("message.queued", event_data(row)) for row in rows], connection=conn
        )
    return BulkOutcome(batch, results)
