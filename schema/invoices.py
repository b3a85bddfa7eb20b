"""Invoices: what OCR read from each PDF, correcting it, and the live `invoiceStatus`."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from decimal import Decimal
from typing import Annotated, Any, ClassVar

import strawberry
from strawberry import relay
from strawberry.file_uploads import Upload
from strawberry.types import Info

from models.invoices import Invoice as InvoiceRow
from models.invoices import InvoiceSource, InvoiceStatus
from resolvers import invoices
from schema.files import spooled_of
from schema.permissions import mutation, query, subscription
from schema.relay import After, Connection, First, ModelNode, decode_id

strawberry.enum(
    InvoiceStatus,
    description="Where an invoice is, in order: RECEIVED, STORED (its PDF is kept), SUBMITTED "
    "(handed to OCR), PROCESSING, REVIEW_NEEDED (OCR waits for a person to confirm), "
    "PROCESSED (its fields are read), or FAILED (see `failureReason`).",
)
strawberry.enum(
    InvoiceSource,
    description="Where the PDF came from: MAILBOX (the organization's invoice mailbox), "
    "UPLOAD, or FILE (an existing file).",
)


@strawberry.type(description="A line of an invoice, as read.")
class InvoiceLineItem:
    description: str | None = strawberry.field(description="What was sold.")
    quantity: Decimal | None = strawberry.field(description="How many.")
    unit_price: Decimal | None = strawberry.field(description="Price of one.")
    total: Decimal | None = strawberry.field(description="The line's total.")


def _decimal(value: Any) -> Decimal | None:
    try:
        return None if value is None else Decimal(str(value))
    except ArithmeticError:
        return None


@strawberry.type(description="An invoice PDF and the fields OCR read from it.")
class Invoice(ModelNode):
    _model: ClassVar[type] = InvoiceRow
    _permission: ClassVar[str] = "invoices:read"
    id: relay.NodeID[int]
    status: InvoiceStatus = strawberry.field(description="Where it is.")
    source: InvoiceSource = strawberry.field(description="Where its PDF came from.")
    filename: str = strawberry.field(description="The PDF's file name.")
    size: int = strawberry.field(description="The PDF's size in bytes.")
    sha256: str = strawberry.field(description="The PDF's SHA-256, hex.")
    invoice_number: str | None = strawberry.field(description="The invoice's number.")
    vendor_name: str | None = strawberry.field(description="Who sent the invoice.")
    total_amount: Decimal | None = strawberry.field(
        description="The total, exact (a decimal string), in `currency`."
    )
    currency: str | None = strawberry.field(description="ISO 4217 code of the amounts.")
    issue_date: dt.date | None = strawberry.field(description="When it was issued.")
    due_date: dt.date | None = strawberry.field(description="When it is due.")
    line_items: list[InvoiceLineItem] = strawberry.field(description="Its lines, as read.")
    failure_reason: str | None = strawberry.field(description="Why it FAILED.")
    submitted_at: dt.datetime | None = strawberry.field(description="When it went to OCR.")
    processed_at: dt.datetime | None = strawberry.field(description="When its fields were read.")
    corrected_at: dt.datetime | None = strawberry.field(
        description="When a person last corrected its fields (`updateInvoice`)."
    )
    created_at: dt.datetime = strawberry.field(description="When it arrived.")

    @classmethod
    def from_row(cls, row: Any) -> Invoice:
        return cls(
            id=row.id,
            status=InvoiceStatus(row.status),
            source=InvoiceSource(row.source),
            filename=row.filename,
            size=row.size,
            sha256=row.sha256,
            invoice_number=row.invoice_number,
            vendor_name=row.vendor_name,
            total_amount=_decimal(row.total_amount),
            currency=row.currency,
            issue_date=row.issue_date,
            due_date=row.due_date,
            line_items=[
                InvoiceLineItem(
                    description=item.get("description"),
                    quantity=_decimal(item.get("quantity")),
                    unit_price=_decimal(item.get("unit_price")),
                    total=_decimal(item.get("total")),
                )
                for item in row.line_items or []
                if isinstance(item, dict)
            ],
            failure_reason=row.failure_reason,
            submitted_at=row.submitted_at,
            processed_at=row.processed_at,
            corrected_at=row.corrected_at,
            created_at=row.created_at,
        )


@strawberry.input(description="Corrections to an invoice's fields; what is left out stays.")
class UpdateInvoiceInput:
    id: relay.GlobalID = strawberry.field(description="Id of the invoice.")
    invoice_number: str | None = strawberry.field(default=None, description="Its number.")
    vendor_name: str | None = strawberry.field(default=None, description="Who sent it.")
    total_amount: Decimal | None = strawberry.field(default=None, description="Its total.")
    currency: str | None = strawberry.field(default=None, description="ISO 4217 code.")
    issue_date: dt.date | None = strawberry.field(default=None, description="Issued on.")
    due_date: dt.date | None = strawberry.field(default=None, description="Due on.")


@strawberry.input(description="An invoice PDF to upload (a multipart request).")
class UploadInvoiceInput:
    file: Upload = strawberry.field(
        description="The PDF, as a file part of a GraphQL multipart request (at most 16 MB; "
        "its bytes must be a PDF)."
    )


@strawberry.input(description="An existing PDF file to read as an invoice.")
class CreateInvoiceFromFileInput:
    file_id: relay.GlobalID = strawberry.field(description="Id of the file (a stored PDF).")


@strawberry.input(description="The invoice to read again.")
class ReprocessInvoiceInput:
    id: relay.GlobalID = strawberry.field(description="Id of the invoice.")


@strawberry.type(description="The invoice after the change.")
class InvoicePayload:
    invoice: Invoice = strawberry.field(description="The invoice.")


@strawberry.type
class Query:
    @query(
        operation=invoices.list_invoices,
        description="Invoices of the current organization, newest first.",
    )
    async def invoices(
        self,
        info: Info,
        status: Annotated[
            InvoiceStatus | None, strawberry.argument(description="Only in this state.")
        ] = None,
        vendor: Annotated[
            str | None, strawberry.argument(description="Only vendors whose name contains this.")
        ] = None,
        issued_from: Annotated[
            dt.date | None, strawberry.argument(description="Only issued on or after.")
        ] = None,
        issued_to: Annotated[
            dt.date | None, strawberry.argument(description="Only issued on or before.")
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[Invoice]:
        page = await invoices.list_invoices(
            info.context,
            first=first,
            after=after,
            status=None if status is None else status.value,
            vendor=vendor,
            issued_from=issued_from,
            issued_to=issued_to,
        )
        return Connection.of(page, Invoice.from_row)


@strawberry.type
class Mutation:
    @mutation(
        operation=invoices.upload_invoice,
        description="Upload an invoice PDF (GraphQL multipart request spec, with an "
        "`Apollo-Require-Preflight` header) and start reading it; follow it with "
        "`invoiceStatus`.",
    )
    async def upload_invoice(self, info: Info, input: UploadInvoiceInput) -> InvoicePayload:
        row = await invoices.upload_invoice(info.context, upload=spooled_of(input.file))
        return InvoicePayload(invoice=Invoice.from_row(row))

    @mutation(
        operation=invoices.invoice_from_file,
        description="Read an existing PDF file as an invoice (one invoice per file).",
    )
    async def create_invoice_from_file(
        self, info: Info, input: CreateInvoiceFromFileInput
    ) -> InvoicePayload:
        row = await invoices.invoice_from_file(info.context, decode_id(input.file_id, "File"))
        return InvoicePayload(invoice=Invoice.from_row(row))

    @mutation(
        operation=invoices.update_invoice,
        description="Correct the fields OCR read; who and when are recorded.",
    )
    async def update_invoice(self, info: Info, input: UpdateInvoiceInput) -> InvoicePayload:
        row = await invoices.update_invoice(
            info.context,
            decode_id(input.id, "Invoice"),
            invoices.InvoiceChanges(
                invoice_number=input.invoice_number,
                vendor_name=input.vendor_name,
                total_amount=input.total_amount,
                currency=input.currency,
                issue_date=input.issue_date,
                due_date=input.due_date,
            ),
        )
        return InvoicePayload(invoice=Invoice.from_row(row))

    @mutation(
        operation=invoices.reprocess_invoice,
        description="Read a PROCESSED, FAILED or REVIEW_NEEDED invoice again with OCR.",
    )
    async def reprocess_invoice(self, info: Info, input: ReprocessInvoiceInput) -> InvoicePayload:
        row = await invoices.reprocess_invoice(info.context, decode_id(input.id, "Invoice"))
        return InvoicePayload(invoice=Invoice.from_row(row))


@strawberry.type
class Subscription:
    @subscription(
        operation=invoices.invoice_status,
        description="An invoice now, then at each change of its status; completes once it is "
        "PROCESSED or FAILED. Another organization's id is NOT_FOUND.",
    )
    async def invoice_status(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="Id of the invoice.")],
    ) -> AsyncGenerator[Invoice, None]:
        async for row in invoices.invoice_status(info.context, decode_id(id, "Invoice")):
            yield Invoice.from_row(row)
