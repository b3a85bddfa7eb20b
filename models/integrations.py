"""The integration error log: one row per failed call to a third party."""

from __future__ import annotations

from tortoise import fields

from models.base import TenantModel


class IntegrationError(TenantModel):
    """A failed outbound call made on a tenant's behalf. The message is scrubbed of secrets."""

    provider = fields.CharField(max_length=32, db_index=True)
    operation = fields.CharField(max_length=120)
    status = fields.IntField(null=True)  # HTTP status from the vendor; null for network errors
    vendor_code = fields.CharField(max_length=120, null=True)
    message = fields.TextField()
    credential_source = fields.CharField(max_length=16, null=True)  # USER, TENANT, SYSTEM, SANDBOX
    duration_ms = fields.FloatField(null=True)
    request_id = fields.CharField(max_length=128, null=True)

    class Meta:
        table = "integration_errors"
