"""Invoices: a PDF on its way through Rossum's OCR, and the fields read from it.

States, forward only (a conditional UPDATE, so a hook and a poll racing for one invoice
end in one state, and each change is one `invoice.<status>` event):

    RECEIVED → STORED → SUBMITTED → PROCESSING → (REVIEW_NEEDED →) PROCESSED
                                                                 or FAILED (a reason)

- An invoice comes from a mailbox's PDF (`create_from_document`, called by the mailbox
  intake in its own transaction) — its bytes are stored, so it starts STORED — and later
  from uploads and existing files.
- `invoices.submit` hands the bytes to Rossum (the tenant's credential → the operator's →
  the sandbox). Rossum's upload has no idempotency key, so a submit that crashed after the
  upload and before its commit uploads again on the next try (a second annotation; the
  first is never followed). A permanent refusal fails the invoice.
- Completion: Rossum's hook (`annotation_status.*`, verified and stored once per request
  id by the inbox) queues a refresh at once; a poll (`INVOICE_POLL_SECONDS`) is the safety
  net when no hook comes. Either way the refresh reads the annotation from Rossum — a
  hook's payload is a wake-up call, never taken as the state — so both paths end in the
  same state once. `INVOICE_GIVE_UP_SECONDS` after the submit an unfinished one fails.
- `reprocessInvoice` submits it again; `updateInvoice` corrects fields (who and when are
  kept).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, Conflict, NotFound
from kit.roles import Role
from kit.text import one_line
from models.accounts import User
from models.files import File, FilePurpose, FileStatus
from models.invoices import Invoice, InvoiceSource, InvoiceStatus
from models.mailbox import ReceivedDocument, ReceivedDocumentContent
from models.members import Membership
from models.tenancy import get_scoped, scoped
from models.webhooks import WebhookInbox
from providers import rossum
from providers.errors import ProviderError
from resolvers import files, mail
from resolvers.context import Context, Services
from resolvers.credentials import resolve_tenant_credential, rossum_client
from resolvers.events import Event, emit, follow, global_id, listener, row_id
from resolvers.jobs import JobContext, enqueue, job_handler
from resolvers.operations import operation
from resolvers.pagination import Page, page_of
from resolvers.spool import Spooled
from resolvers.storage import storage_of
from resolvers.webhooks_in import inbox_handler

log = logging.getLogger("switchboard.invoices")

SUBMIT_JOB = "invoices.submit"
NOTIFY_JOB = "invoices.notify"
REFRESH_JOB = "invoices.refresh"
RANK = {
    InvoiceStatus.RECEIVED.value: 0,
    InvoiceStatus.STORED.value: 1,
    InvoiceStatus.SUBMITTED.value: 2,
    InvoiceStatus.PROCESSING.value: 3,
    InvoiceStatus.REVIEW_NEEDED.value: 4,
    InvoiceStatus.PROCESSED.value: 5,
    InvoiceStatus.FAILED.value: 5,
}
FINAL = frozenset({InvoiceStatus.PROCESSED.value, InvoiceStatus.FAILED.value})
REVIEW_STATUSES = frozenset({rossum.TO_REVIEW, rossum.REVIEWING, "postponed"})
MAX_REASON = 2000


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def event_data(invoice: Invoice) -> dict[str, Any]:
    return {
        "invoice_id": global_id("Invoice", invoice.id),
        "status": invoice.status,
        "invoice_number": invoice.invoice_number,
        "vendor_name": invoice.vendor_name,
    }


async def advance(
    invoice: Invoice, status: InvoiceStatus, *, connection: BaseDBAsyncClient, **fields: Any
) -> bool:
    """Move `invoice` to `status` (setting `fields`) unless it is there or beyond already;
    emit `invoice.<status>`. True when it moved."""
    rank = RANK[status.value]
    lower = [s for s, r in RANK.items() if r < rank]
    at = now()
    values = {"status": status.value, "status_changed_at": at, "updated_at": at, **fields}
    moved = (
        await Invoice.filter(id=invoice.id, status__in=lower).using_db(connection).update(**values)
    )
    if not moved:
        return False
    for name, value in values.items():
        setattr(invoice, name, value)
    await emit(
        invoice.tenant_id,
        f"invoice.{status.value.lower()}",
        event_data(invoice),
        connection=connection,
    )
    return True


# Where invoices come from ---------------------------------------------------------------


async def create_from_document(
    document: ReceivedDocument, *, connection: BaseDBAsyncClient
) -> Invoice:
    """The invoice of a mailbox's PDF, with its submit job, in the intake's transaction."""
    invoice = await Invoice.create(
        tenant_id=document.tenant_id,
        status=InvoiceStatus.STORED.value,
        source=InvoiceSource.MAILBOX.value,
        filename=document.filename,
        sha256=document.sha256,
        size=document.size,
        received_document_id=document.id,
        status_changed_at=now(),
        using_db=connection,
    )
    await enqueue(
        SUBMIT_JOB, {"invoice_id": invoice.id}, tenant_id=invoice.tenant_id, connection=connection
    )
    await emit(invoice.tenant_id, "invoice.stored", event_data(invoice), connection=connection)
    return invoice


async def content_of(services: Services, invoice: Invoice) -> bytes:
    """The invoice's PDF bytes, wherever its source keeps them."""
    if invoice.file_id is not None:
        stored = await File.filter(tenant_id=invoice.tenant_id, id=invoice.file_id).first()
        if stored is not None:
            return await storage_of(services).read(stored.storage_key)
    if invoice.received_document_id is not None:
        row = await ReceivedDocumentContent.filter(
            tenant_id=invoice.tenant_id, document_id=invoice.received_document_id
        ).first()
        if row is not None:
            return bytes(row.content)
    raise NotFound("The invoice's document is gone.")


async def _from_file(file: File, source: InvoiceSource, created_by_id: int | None) -> Invoice:
    async with in_transaction() as conn:
        invoice = await Invoice.create(
            tenant_id=file.tenant_id,
            status=InvoiceStatus.STORED.value,
            source=source.value,
            filename=file.name,
            sha256=file.sha256,
            size=file.size,
            file_id=file.id,
            created_by_id=created_by_id,
            status_changed_at=now(),
            using_db=conn,
        )
        await enqueue(
            SUBMIT_JOB, {"invoice_id": invoice.id}, tenant_id=invoice.tenant_id, connection=conn
        )
        await emit(invoice.tenant_id, "invoice.stored", event_data(invoice), connection=conn)
    return invoice


@operation("invoices:write")
async def upload_invoice(ctx: Context, *, upload: Spooled) -> Invoice:
    """Store an uploaded PDF (the files area's INVOICE purpose: a PDF by its bytes, at most
    16 MB) and start reading it."""
    principal = ctx.require("invoices:write")
    stored = await files.store_spooled(
        ctx.services,
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        purpose=FilePurpose.INVOICE,
        spooled=upload,
        default_name="invoice.pdf",
    )
    return await _from_file(stored, InvoiceSource.UPLOAD, principal.user_id)


@operation("invoices:write")
async def invoice_from_file(ctx: Context, file_id: int) -> Invoice:
    """Read an organization's existing PDF file as an invoice (one invoice per file)."""
    principal = ctx.require("invoices:write")
    stored = await get_scoped(File, principal.tenant_id, file_id)
    if stored.status != FileStatus.READY.value or stored.content_type != "application/pdf":
        raise BadUserInput("Only a stored PDF can be an invoice.", details={"fileId": "not a PDF"})
    existing = await scoped(Invoice, principal.tenant_id).filter(file_id=stored.id).first()
    if existing is not None:
        raise Conflict(
            "This file is an invoice already.",
            details={"fileId": "has an invoice"},
            invoiceId=global_id("Invoice", existing.id),
        )
    return await _from_file(stored, InvoiceSource.FILE, principal.user_id)


@files.register_reference_check
async def _invoices_using(tenant_id: int, file_id: int) -> list[str]:
    """A file an invoice reads from is not deleted under it."""
    rows = await scoped(Invoice, tenant_id).filter(file_id=file_id)
    return [f"invoice {row.invoice_number or global_id('Invoice', row.id)}" for row in rows]


# Rossum ---------------------------------------------------------------------------------


async def _client(services: Services, tenant_id: int) -> rossum.RossumClient:
    ctx = Context(services=services, request_id=f"invoice-{uuid.uuid4().hex[:12]}")
    credential = await resolve_tenant_credential(ctx, rossum.PROVIDER, tenant_id)
    client = rossum_client(ctx, credential)
    client.labels["tenant_id"] = str(tenant_id)
    return client


def _services(job: JobContext) -> Services:
    if job.services is None:
        raise RuntimeError("invoice jobs need the process's services (gateway/worker.py)")
    return job.services


@job_handler(SUBMIT_JOB, max_attempts=6)
async def submit_job(job: JobContext, payload: dict[str, Any]) -> None:
    invoice = await Invoice.get_or_none(id=int(payload["invoice_id"]))
    if invoice is None or invoice.status not in (
        InvoiceStatus.RECEIVED.value,
        InvoiceStatus.STORED.value,
    ):
        return  # submitted already (a repeated job), or its tenant is gone
    services = _services(job)
    try:
        client = await _client(services, invoice.tenant_id)
        submitted = await client.submit(await content_of(services, invoice), invoice.filename)
    except ProviderError as err:
        if err.retryable and not job.is_last_attempt:
            raise
        async with in_transaction() as conn:
            await advance(
                invoice,
                InvoiceStatus.FAILED,
                connection=conn,
                failure_reason=f"Rossum refused the document: {err}"[:MAX_REASON],
            )
        return
    except NotFound as err:
        async with in_transaction() as conn:
            await advance(
                invoice, InvoiceStatus.FAILED, connection=conn, failure_reason=err.message
            )
        return
    async with in_transaction() as conn:
        moved = await advance(
            invoice,
            InvoiceStatus.SUBMITTED,
            connection=conn,
            annotation_id=submitted.annotation_id,
            rossum_document_id=submitted.document_id,
            submitted_at=now(),
            submit_attempts=invoice.submit_attempts + 1,
        )
        if moved:
            await _schedule_refresh(invoice, services, connection=conn)


async def _schedule_refresh(
    invoice: Invoice, services: Services, *, connection: BaseDBAsyncClient, at_once: bool = False
) -> None:
    delay = 0.0 if at_once else services.settings.invoice_poll_seconds
    await enqueue(
        REFRESH_JOB,
        {"invoice_id": invoice.id, "annotation_id": invoice.annotation_id, "poll": not at_once},
        tenant_id=invoice.tenant_id,
        run_at=now() + dt.timedelta(seconds=delay),
        connection=connection,
    )


def _amount(value: Decimal | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return value.quantize(Decimal("0.0001"))
    except InvalidOperation:
        return None


def _line_items(items: list[rossum.LineItem]) -> list[dict[str, Any]]:
    def text(value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    return [
        {
            "description": item.description,
            "quantity": text(item.quantity),
            "unit_price": text(item.unit_price),
            "total": text(item.total),
        }
        for item in items
    ]


async def refresh(services: Services, invoice: Invoice) -> None:
    """Read the invoice's annotation from Rossum and move the invoice to match."""
    if invoice.annotation_id is None or invoice.status in FINAL:
        return
    client = await _client(services, invoice.tenant_id)
    annotation = await client.get_annotation(invoice.annotation_id)
    if annotation.done:
        read = await client.extract(invoice.annotation_id)
        async with in_transaction() as conn:
            await advance(
                invoice,
                InvoiceStatus.PROCESSED,
                connection=conn,
                processed_at=now(),
                invoice_number=read.invoice_number[:100] if read.invoice_number else None,
                vendor_name=read.vendor_name[:300] if read.vendor_name else None,
                total_amount=_amount(read.total_amount),
                currency=read.currency,
                issue_date=read.issue_date,
                due_date=read.due_date,
                line_items=_line_items(read.line_items),
            )
        return
    async with in_transaction() as conn:
        if annotation.failed:
            reason = "; ".join(annotation.messages) or f"Rossum: {annotation.status}"
            await advance(
                invoice, InvoiceStatus.FAILED, connection=conn, failure_reason=reason[:MAX_REASON]
            )
        elif annotation.status in REVIEW_STATUSES:
            await advance(invoice, InvoiceStatus.REVIEW_NEEDED, connection=conn)
        else:
            await advance(invoice, InvoiceStatus.PROCESSING, connection=conn)


@job_handler(REFRESH_JOB, max_attempts=6)
async def refresh_job(job: JobContext, payload: dict[str, Any]) -> None:
    invoice = await Invoice.get_or_none(id=int(payload["invoice_id"]))
    if invoice is None or invoice.annotation_id != payload.get("annotation_id"):
        return  # gone, or submitted again since (a newer annotation has its own refreshes)
    services = _services(job)
    await refresh(services, invoice)
    if invoice.status in FINAL or not payload.get("poll"):
        return
    submitted = invoice.submitted_at or invoice.created_at or now()
    async with in_transaction() as conn:
        if now() - submitted > dt.timedelta(seconds=services.settings.invoice_give_up_seconds):
            await advance(
                invoice,
                InvoiceStatus.FAILED,
                connection=conn,
                failure_reason="Rossum did not finish reading the invoice in time.",
            )
            return
        await _schedule_refresh(invoice, services, connection=conn)  # the next poll


HOOK_GRACE = dt.timedelta(minutes=2)


class NotYetSubmitted(Exception):
    """A hook about an annotation whose submit has not committed yet: retried."""


def _annotation_id(payload: Any) -> str | None:
    annotation = payload.get("annotation") if isinstance(payload, dict) else None
    if not isinstance(annotation, dict):
        return None
    raw = annotation.get("id") or rossum.id_of(annotation.get("url"))
    return str(raw)[:64] if raw else None


@inbox_handler("rossum", "annotation_status.*")
async def on_rossum_hook(event: WebhookInbox, connection: BaseDBAsyncClient) -> None:
    """A hook is a wake-up call: the refresh reads the annotation from Rossum."""
    annotation_id = _annotation_id(event.payload)
    if annotation_id is None:
        return
    qs = Invoice.filter(annotation_id=annotation_id).using_db(connection)
    if event.tenant_id is not None:  # a tenant's own hook: its invoices only
        qs = qs.filter(tenant_id=event.tenant_id)
    found = await qs
    if not found and now() - (event.created_at or now()) < HOOK_GRACE:
        # Rossum can call before the submit that created the annotation has committed:
        # the inbox job tries again shortly instead of dropping the wake-up.
        raise NotYetSubmitted(f"no invoice follows annotation {annotation_id} yet")
    for invoice in found:
        if invoice.status in FINAL:
            continue
        await enqueue(
            REFRESH_JOB,
            {"invoice_id": invoice.id, "annotation_id": annotation_id, "poll": False},
            tenant_id=invoice.tenant_id,
            connection=connection,
        )


# The invoice-processed mail --------------------------------------------------------------

# Who hears that an invoice was read: the people who work with invoices.
NOTIFIED_ROLES = (Role.OWNER.value, Role.ACCOUNTING.value)


@listener("invoice.processed")
async def notify_when_processed(event: Event, connection: BaseDBAsyncClient) -> None:
    """Queue the mail job in the relay's transaction: once per event."""
    invoice_id = row_id(event.data.get("invoice_id"), "Invoice")
    if invoice_id is None:
        return
    await enqueue(
        NOTIFY_JOB,
        {"invoice_id": invoice_id},
        tenant_id=event.tenant_id,
        unique_key=f"invoice-notify:{event.id}",
        connection=connection,
    )


@job_handler(NOTIFY_JOB)
async def notify_job(job: JobContext, payload: dict[str, Any]) -> None:
    """The `invoice_processed` mail to the organization's owners and accountants, one
    message each, all queued in one transaction."""
    services = _services(job)
    invoice = await Invoice.filter(id=int(payload["invoice_id"]), tenant_id=job.tenant_id).first()
    if invoice is None:
        return
    members = await Membership.filter(tenant_id=invoice.tenant_id, role__in=NOTIFIED_ROLES)
    people = await User.filter(id__in=[m.user_id for m in members], is_active=True)
    if not people:
        return
    organization = await mail.organization_name(invoice.tenant_id)
    amount = (
        f"{invoice.total_amount:,.2f} {invoice.currency or ''}".strip()
        if invoice.total_amount is not None
        else "(not read)"
    )
    body = mail.render(
        "invoice_processed",
        {
            "invoice_number": invoice.invoice_number or invoice.filename,
            "amount": amount,
            "status": invoice.status,
            "vendor": invoice.vendor_name,
            "due_date": invoice.due_date.isoformat() if invoice.due_date else None,
        },
        organization=organization,
    )
    async with in_transaction() as conn:
        for person in people:
            await mail.queue(
                settings=services.settings,
                tenant_id=invoice.tenant_id,
                kind="invoice_processed",
                to=mail.Recipient(person.email, person.name or ""),
                body=body,
                organization=organization,
                connection=conn,
            )


# The API ----------------------------------------------------------------------------------


@operation("invoices:read")
async def list_invoices(
    ctx: Context,
    *,
    first: int | None,
    after: str | None,
    status: str | None = None,
    vendor: str | None = None,
    issued_from: dt.date | None = None,
    issued_to: dt.date | None = None,
) -> Page[Invoice]:
    principal = ctx.require("invoices:read")
    qs = scoped(Invoice, principal.tenant_id)
    if status is not None:
        qs = qs.filter(status=status)
    if vendor:
        qs = qs.filter(vendor_name__icontains=vendor.strip()[:300])
    if issued_from is not None:
        qs = qs.filter(issue_date__gte=issued_from)
    if issued_to is not None:
        qs = qs.filter(issue_date__lte=issued_to)
    return await page_of(ctx, qs, first=first, after=after)


@dataclass
class InvoiceChanges:
    """Fields a person corrects; None leaves a field as it is."""

    invoice_number: str | None = None
    vendor_name: str | None = None
    total_amount: Decimal | None = None
    currency: str | None = None
    issue_date: dt.date | None = None
    due_date: dt.date | None = None


@operation("invoices:write")
async def update_invoice(ctx: Context, invoice_id: int, changes: InvoiceChanges) -> Invoice:
    """Correct what OCR read; who and when are recorded."""
    principal = ctx.require("invoices:write")
    await get_scoped(Invoice, principal.tenant_id, invoice_id)  # NOT_FOUND before anything
    values: dict[str, Any] = {}
    if changes.invoice_number is not None:
        values["invoice_number"] = one_line(changes.invoice_number, "invoiceNumber")[:100]
    if changes.vendor_name is not None:
        values["vendor_name"] = one_line(changes.vendor_name, "vendorName")[:300]
    if changes.total_amount is not None:
        if not changes.total_amount.is_finite() or abs(changes.total_amount) >= Decimal(10) ** 14:
            raise BadUserInput("Not an amount.", details={"totalAmount": "out of range"})
        values["total_amount"] = _amount(changes.total_amount)
    if changes.currency is not None:
        code = changes.currency.strip().upper()
        if len(code) != 3 or not code.isalpha() or not code.isascii():
            raise BadUserInput("Not a currency.", details={"currency": "an ISO 4217 code"})
        values["currency"] = code
    if changes.issue_date is not None:
        values["issue_date"] = changes.issue_date
    if changes.due_date is not None:
        values["due_date"] = changes.due_date
    if not values:
        raise BadUserInput("Nothing to change.", details={"input": "give at least one field"})
    async with in_transaction() as conn:
        invoice = await get_scoped(Invoice, principal.tenant_id, invoice_id, for_update=True)
        values.update(corrected_at=now(), corrected_by_id=principal.user_id, updated_at=now())
        await Invoice.filter(id=invoice.id).using_db(conn).update(**values)
        await emit(invoice.tenant_id, "invoice.updated", event_data(invoice), connection=conn)
    return await Invoice.get(id=invoice.id)


@operation("invoices:write")
async def reprocess_invoice(ctx: Context, invoice_id: int) -> Invoice:
    """Run OCR again: the invoice goes back to STORED and is submitted anew."""
    principal = ctx.require("invoices:write")
    async with in_transaction() as conn:
        invoice = await get_scoped(Invoice, principal.tenant_id, invoice_id, for_update=True)
        if invoice.status not in FINAL and invoice.status != InvoiceStatus.REVIEW_NEEDED.value:
            raise Conflict("The invoice is being read now.", details={"status": invoice.status})
        await (
            Invoice.filter(id=invoice.id)
            .using_db(conn)
            .update(
                status=InvoiceStatus.STORED.value,
                annotation_id=None,
                rossum_document_id=None,
                failure_reason=None,
                status_changed_at=now(),
                updated_at=now(),
            )
        )
        await enqueue(
            SUBMIT_JOB, {"invoice_id": invoice.id}, tenant_id=invoice.tenant_id, connection=conn
        )
        invoice.status = InvoiceStatus.STORED.value
        await emit(invoice.tenant_id, "invoice.stored", event_data(invoice), connection=conn)
    return await Invoice.get(id=invoice.id)


@operation("invoices:read")
async def invoice_status(ctx: Context, invoice_id: int) -> AsyncGenerator[Invoice, None]:
    """The invoice now, then at each change until PROCESSED or FAILED."""
    principal = ctx.require("invoices:read")
    tenant_id = principal.tenant_id
    if not await Invoice.filter(id=invoice_id, tenant_id=tenant_id).exists():
        raise NotFound("Invoice not found.")
    wanted = global_id("Invoice", invoice_id)
    stream = follow(
        tenant_id,
        ["invoice.*"],
        about=lambda event: event.data.get("invoice_id") == wanted,
        load=lambda: Invoice.filter(id=invoice_id, tenant_id=tenant_id).first(),
        state=lambda row: row.status,
        final=lambda row: row.status in FINAL,
    )
    try:
        async for row in stream:
            yield row
    finally:
        await stream.aclose()
