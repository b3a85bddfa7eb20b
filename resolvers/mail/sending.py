"""`sendEmail` and `sendBulkEmail`: what a user of the API sends.

A message is a template with variables (the catalogue in resolvers/mail/templates.py;
account mail is the gateway's own) or a subject with HTML and/or text. Recipients are
checked (syntax, suppression list) before anything is written; then the rows and jobs
are written in one transaction and the answer names them — the sending happens in jobs.

A bulk send writes one message per recipient (with its own variables), grouped in an
`EmailBatch`, sent by `mail.send_batch` jobs of BATCH_SIZE messages over one provider
chain each — paced by each provider's limits in the provider layer. A broadcast (the
default) carries `List-Unsubscribe` with RFC 8058's one-click POST; its unsubscribe puts
the address on the suppression list. Per-recipient results say QUEUED, SUPPRESSED,
INVALID or DUPLICATE.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, GatewayError
from kit.security import new_token
from kit.text import one_line, text_problem
from models.mail import EmailBatch, OutboundEmail
from models.tenants import Tenant
from resolvers.context import Context
from resolvers.events import emit_many
from resolvers.jobs import enqueue
from resolvers.mail.compose import Recipient, sender_address
from resolvers.mail.delivery import BATCH_JOB, BATCH_SIZE, unsubscribe_link
from resolvers.mail.outbox import event_data, new_message_id, queue
from resolvers.mail.suppression import refuse, suppressed
from resolvers.mail.templates import Rendered, check_variables, get_template, render
from resolvers.operations import operation

MAX_RECIPIENTS = 50  # to + cc + bcc of one message (Resend's limit)
MAX_BULK_RECIPIENTS = 1000
MAX_BODY_CHARS = 512 * 1024
SENDS_PER_TENANT = "1000/hour"
BULK_SENDS_PER_TENANT = "20/hour"
BULK_KIND = "bulk"
DIRECT_KIND = "direct"


@dataclass
class RecipientIn:
    email: str
    name: str | None = None
    variables: Any = None


@dataclass
class MessageIn:
    """The content of a message: a template with variables, or subject + html/text."""

    subject: str | None = None
    template: str | None = None
    variables: Any = None
    html: str | None = None
    text: str | None = None


@dataclass
class SendEmailIn(MessageIn):
    to: list[RecipientIn] = field(default_factory=list)
    cc: list[RecipientIn] = field(default_factory=list)
    bcc: list[RecipientIn] = field(default_factory=list)
    reply_to: str | None = None


@dataclass
class SendBulkEmailIn(MessageIn):
    recipients: list[RecipientIn] = field(default_factory=list)
    broadcast: bool = True


class _Text(HTMLParser):
    """The readable text of an HTML body, for its plain-text alternative."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("br", "p", "div", "li", "tr", "h1", "h2", "h3"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def text_of(markup: str) -> str:
    parser = _Text()
    parser.feed(markup)
    parser.close()
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+", " ", "".join(parser.parts))).strip() + "\n"


def _body_text(value: str | None, field_name: str) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_BODY_CHARS:
        raise BadUserInput(
            "The body is too long.", details={field_name: f"at most {MAX_BODY_CHARS} characters"}
        )
    problem = text_problem(value)
    if problem:
        raise BadUserInput(f"{field_name} {problem}.", details={field_name: problem})
    return value


def _content(
    message: MessageIn,
    organization: str,
    variables: dict[str, Any],
    *,
    unsubscribe_url: str | None = None,
) -> Rendered:
    """The subject and bodies of `message` for one recipient."""
    if message.template is not None:
        if message.html is not None or message.text is not None:
            raise BadUserInput(
                "Give a template or a body, not both.", details={"template": "or html/text"}
            )
        template = get_template(message.template)
        if not template.sendable:
            raise BadUserInput(
                "This template is the gateway's own account mail.",
                details={"template": "cannot be sent through the API"},
            )
        rendered = render(
            template.name, variables, organization=organization, unsubscribe_url=unsubscribe_url
        )
        if message.subject:
            rendered = Rendered(
                one_line(message.subject, "subject")[:300], rendered.html, rendered.text
            )
        return rendered
    html = _body_text(message.html, "html")
    text = _body_text(message.text, "text")
    if not html and not text:
        raise BadUserInput("A message needs a body.", details={"html": "or text, or a template"})
    if not message.subject:
        raise BadUserInput("A subject is required.", details={"subject": "is required"})
    subject = one_line(message.subject, "subject")
    if len(subject) > 300:
        raise BadUserInput(
            "The subject is too long.", details={"subject": "at most 300 characters"}
        )
    if unsubscribe_url:
        footer = f"\n\nUnsubscribe: {unsubscribe_url}\n"
        text = (text or text_of(html or "")) + footer
        if html:
            html += (
                f'<p style="font-size:12px"><a href="{html_lib.escape(unsubscribe_url)}">'
                "Unsubscribe</a></p>"
            )
    return Rendered(subject, html or "", text if text is not None else text_of(html or ""))


def _recipients(items: list[RecipientIn], field_name: str) -> list[Recipient]:
    return [Recipient.of(r.email, r.name, field=field_name) for r in items]


async def _limit(ctx: Context, spec: str, name: str, tenant_id: int, message: str) -> None:
    if ctx.settings.rate_limit_enabled:
        await ctx.services.limiter.enforce(spec, name, str(tenant_id), message=message)


@operation("mail:send")
async def send_email(ctx: Context, message: SendEmailIn) -> OutboundEmail:
    """Queue one message (to/cc/bcc); refused as a whole when a recipient is suppressed."""
    principal = ctx.require("mail:send")
    to = _recipients(message.to, "to")
    cc = _recipients(message.cc, "cc")
    bcc = _recipients(message.bcc, "bcc")
    if not to:
        raise BadUserInput("A message needs a recipient.", details={"to": "is required"})
    if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
        raise BadUserInput(
            "Too many recipients.", details={"to": f"to, cc and bcc: at most {MAX_RECIPIENTS}"}
        )
    reply_to = Recipient.of(message.reply_to, field="replyTo") if message.reply_to else None
    variables = check_variables(message.variables)
    tenant = await Tenant.get(id=principal.tenant_id)
    body = _content(message, tenant.name, variables)
    hit = await suppressed(tenant.id, [r.email for r in (*to, *cc, *bcc)])
    if hit:
        raise refuse(hit)
    await _limit(ctx, SENDS_PER_TENANT, "mail", tenant.id, "Too many emails.")
    return await queue(
        settings=ctx.settings,
        tenant_id=tenant.id,
        kind=DIRECT_KIND,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        body=body,
        organization=tenant.name,
    )


@dataclass
class BulkResult:
    email: str
    status: str  # QUEUED, SUPPRESSED, INVALID, DUPLICATE
    message: OutboundEmail | None = None
    error: str | None = None


@dataclass
class BulkOutcome:
    batch: EmailBatch
    results: list[BulkResult]


@operation("mail:send_bulk")
async def send_bulk_email(ctx: Context, message: SendBulkEmailIn) -> BulkOutcome:
    """One message per recipient, each with its own variables; results per recipient."""
    principal = ctx.require("mail:send_bulk")
    if not message.recipients:
        raise BadUserInput("A bulk send needs recipients.", details={"recipients": "is empty"})
    if len(message.recipients) > MAX_BULK_RECIPIENTS:
        raise BadUserInput(
            "Too many recipients.",
            details={"recipients": f"at most {MAX_BULK_RECIPIENTS}"},
        )
    shared = check_variables(message.variables)
    tenant = await Tenant.get(id=principal.tenant_id)
    # The shared content is checked once up front: a broken template or body is one
    # error for the request, not a thousand per-recipient ones.
    _content(message, tenant.name, {**_samples(message), **shared})
    results: list[BulkResult] = []
    wanted: list[tuple[int, Recipient, dict[str, Any]]] = []
    seen: set[str] = set()
    for index, item in enumerate(message.recipients):
        try:
            recipient = Recipient.of(item.email, item.name, field=f"recipients.{index}.email")
            own = check_variables(item.variables)
        except GatewayError as exc:
            results.append(BulkResult(str(item.email)[:320], "INVALID", error=exc.message))
            continue
        if recipient.email in seen:
            results.append(BulkResult(recipient.email, "DUPLICATE"))
            continue
        seen.add(recipient.email)
        results.append(BulkResult(recipient.email, "QUEUED"))
        wanted.append(
            (len(results) - 1, recipient, {**shared, "name": recipient.name or None, **own})
        )
    blocked = await suppressed(tenant.id, [r.email for _, r, _ in wanted])
    for index, recipient, _ in wanted:
        if recipient.email in blocked:
            results[index] = BulkResult(
                recipient.email, "SUPPRESSED", error="on the suppression list"
            )
    wanted = [w for w in wanted if w[1].email not in blocked]
    await _limit(ctx, BULK_SENDS_PER_TENANT, "mail-bulk", tenant.id, "Too many bulk sends.")

    sender = sender_address(ctx.settings, tenant.name)
    rows: list[OutboundEmail] = []
    for index, recipient, variables in wanted:
        token = new_token(nbytes=24) if message.broadcast else None
        link = unsubscribe_link(ctx.settings, token) if token else None
        try:
            body = _content(message, tenant.name, variables, unsubscribe_url=link)
        except GatewayError as exc:  # this recipient's variables do not fit the template
            results[index] = BulkResult(recipient.email, "INVALID", error=exc.message)
            continue
        rows.append(
            OutboundEmail(
                tenant_id=tenant.id,
                kind=BULK_KIND,
                recipient=recipient.email,
                recipient_name=recipient.name,
                sender=str(sender),
                subject=body.subject,
                html=body.html,
                text=body.text,
                message_id=new_message_id(sender.domain),
                unsubscribe_token=token,
            )
        )
        results[index].message = rows[-1]
    async with in_transaction() as conn:
        batch = await EmailBatch.create(
            tenant_id=tenant.id,
            subject=(rows[0].subject if rows else (message.subject or message.template or ""))[
                :300
            ],
            template=message.template,
            broadcast=message.broadcast,
            total=len(message.recipients),
            queued=len(rows),
            created_by_id=principal.user_id,
            using_db=conn,
        )
        for row in rows:
            row.batch_id = batch.id
        await OutboundEmail.bulk_create(rows, using_db=conn)
        # bulk_create does not give ids back on every backend: read them by Message-ID.
        ids = dict(
            await OutboundEmail.filter(batch_id=batch.id)
            .using_db(conn)
            .values_list("message_id", "id")
        )
        for row in rows:
            row.id = ids[row.message_id]
        for start in range(0, len(rows), BATCH_SIZE):
            chunk = [row.id for row in rows[start : start + BATCH_SIZE]]
            await enqueue(BATCH_JOB, {"email_ids": chunk}, tenant_id=tenant.id, connection=conn)
        await emit_many(
            tenant.id, [("email.queued", event_data(row)) for row in rows], connection=conn
        )
    return BulkOutcome(batch, results)


def _samples(message: MessageIn) -> dict[str, Any]:
    if message.template is None:
        return {}
    return get_template(message.template).samples()
