"""Invoices (resolvers/invoices.py): a document on its way through OCR, and what was read."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields

from models.base import TenantModel


class InvoiceStatus(StrEnum):
    RECEIVED = "RECEIVED"  # known, its bytes not yet where OCR can take them
    STORED = "STORED"  # its bytes are stored: waiting to be submitted
    SUBMITTED = "SUBMITTED"  # handed to Rossum
    PROCESSING = "PROCESSING"  # Rossum is reading it
    REVIEW_NEEDED = "REVIEW_NEEDED"  # Rossum waits for a person to confirm its fields
    PROCESSED = "PROCESSED"  # its fields are read
    FAILED = "FAILED"  # refused or unreadable; `failure_reason` says why


class InvoiceSource(StrEnum):
    MAILBOX = "MAILBOX"  # a PDF from a mailbox (models/mailbox.py)
    UPLOAD = "UPLOAD"  # uploaded through the API
    FILE = "FILE"  # an existing file


class Invoice(TenantModel):
    status = fields.CharField(max_length=16, default=InvoiceStatus.STORED.value, db_index=True)
    source = fields.CharField(max_length=16)
    filename = fields.CharField(max_length=200)
    sha256 = fields.CharField(max_length=64)
    size = fields.BigIntField()
    # Where the bytes are: exactly one of these.
    received_document_id = fields.BigIntField(null=True, unique=True)
    file_id = fields.BigIntField(null=True)
    # Rossum's side.
    annotation_id = fields.CharField(max_length=64, null=True, db_index=True)
    rossum_document_id = fields.CharField(max_length=64, null=True)
    submit_attempts = fields.IntField(default=0)
    # What was read (and maybe corrected by a person).
    invoice_number = fields.CharField(max_length=100, null=True)
    vendor_name = fields.CharField(max_length=300, null=True, db_index=True)
    total_amount = fields.DecimalField(max_digits=18, decimal_places=4, null=True)
    currency = fields.CharField(max_length=3, null=True)
    issue_date = fields.DateField(null=True)
    due_date = fields.DateField(null=True)
    line_items: fields.Field[list[dict[str, Any]]] = fields.JSONField(default=list)
    failure_reason = fields.TextField(null=True)
    submitted_at = fields.DatetimeField(null=True)
    processed_at = fields.DatetimeField(null=True)
    status_changed_at = fields.DatetimeField(null=True)
    corrected_at = fields.DatetimeField(null=True)
    corrected_by_id = fields.BigIntField(null=True)
    created_by_id = fields.BigIntField(null=True)

    class Meta:
        table = "invoices"
