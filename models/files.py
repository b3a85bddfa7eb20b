"""Files: a tenant's stored objects (uploads, documents, invoice PDFs), one row each."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields

from models.base import TenantModel


class FileStatus(StrEnum):
    PENDING = "PENDING"  # a presigned upload was handed out; not usable until completed
    READY = "READY"  # the object is stored and verified


class FilePurpose(StrEnum):
    AVATAR = "AVATAR"
    INVOICE = "INVOICE"
    DOCUMENT = "DOCUMENT"


class File(TenantModel):
    name = fields.CharField(max_length=255)  # made safe (resolvers.storage.safe_filename)
    content_type = fields.CharField(max_length=127, default="")  # sniffed; "" while PENDING
    size = fields.BigIntField()  # bytes (the announced size while PENDING)
    sha256 = fields.CharField(max_length=64)  # hex
    purpose = fields.CharField(max_length=16)  # FilePurpose
    storage_key = fields.CharField(max_length=255, unique=True)
    status = fields.CharField(max_length=16, default=FileStatus.READY.value)
    created_by: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    created_by_id: int | None

    class Meta:
        table = "files"
        indexes = (("tenant_id", "purpose", "status"),)
