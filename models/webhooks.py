"""Webhooks in and out.

Incoming: `WebhookSource` is a tenant's inbound configuration for one provider (the
secret the vendor signs with, encrypted with the vault; the URL token, stored hashed);
`WebhookInbox` holds every authenticated event, written before the sender gets its 2xx,
unique per (provider, source, vendor event id) so a re-delivery is recognised.

Outgoing: `WebhookEndpoint` is a tenant's receiver (URL, event types, signing secrets
encrypted with the vault); `WebhookDelivery` is one message to one endpoint with a fixed
body and `webhook-id` (unique per domain event and endpoint, so an event is never queued
twice for one endpoint); `WebhookAttempt` logs each try.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields

from models.base import TenantModel, TimestampedModel


class InboxStatus(StrEnum):
    RECEIVED = "received"  # stored, waiting for its job
    PROCESSED = "processed"  # a handler ran
    IGNORED = "ignored"  # no handler for this provider / event type
    FAILED = "failed"  # the handler raised; `error` says why (replay re-runs it)


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    SUCCEEDED = "succeeded"  # a 2xx came back
    FAILED = "failed"  # out of attempts, refused (410, disabled endpoint, unsafe URL)


SYSTEM_SOURCE = "system"


class WebhookSource(TenantModel):
    """Where one tenant receives one provider's webhooks: /webhooks/{provider}/{token}."""

    provider = fields.CharField(max_length=40)
    description = fields.CharField(max_length=300, default="")
    token_hash = fields.CharField(max_length=64, unique=True)
    token_prefix = fields.CharField(max_length=16)
    secret_encrypted = fields.TextField()
    disabled_at = fields.DatetimeField(null=True)

    class Meta:
        table = "webhook_sources"


class WebhookInbox(TimestampedModel):
    """One authenticated incoming event. `tenant` is null for system-level webhooks."""

    tenant: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.Tenant", related_name=False, null=True, on_delete=fields.CASCADE
    )
    tenant_id: int | None
    provider = fields.CharField(max_length=40)
    # "system", or "src:<WebhookSource id>": two tenants' senders may reuse an event id.
    source_key = fields.CharField(max_length=40, default=SYSTEM_SOURCE)
    event_id = fields.CharField(max_length=255)
    event_type = fields.CharField(max_length=100)
    payload: fields.Field[Any] = fields.JSONField()
    # the signature-related headers, for audit
    headers: fields.Field[dict[str, str]] = fields.JSONField(default=dict)
    status = fields.CharField(max_length=16, default=InboxStatus.RECEIVED.value)
    attempts = fields.IntField(default=0)
    error = fields.TextField(null=True)
    processed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "webhook_inbox"
        unique_together = (("provider", "source_key", "event_id"),)
        indexes = (("tenant_id", "provider", "status"),)


class WebhookEndpoint(TenantModel):
    url = fields.CharField(max_length=2000)
    description = fields.CharField(max_length=300, default="")
    event_types: fields.Field[list[str]] = fields.JSONField(default=list)  # empty: every event type
    secret_encrypted = fields.TextField()
    previous_secret_encrypted = fields.TextField(null=True)
    previous_secret_expires_at = fields.DatetimeField(null=True)
    secret_rotated_at = fields.DatetimeField(null=True)
    enabled = fields.BooleanField(default=True)
    disabled_at = fields.DatetimeField(null=True)
    disabled_reason = fields.CharField(max_length=300, null=True)
    failing_since = fields.DatetimeField(null=True)  # first failure after the last success
    last_success_at = fields.DatetimeField(null=True)

    class Meta:
        table = "webhook_endpoints"


class WebhookDelivery(TenantModel):
    endpoint: fields.ForeignKeyRelation[WebhookEndpoint] = fields.ForeignKeyField(
        "switchboard.WebhookEndpoint", related_name="deliveries", on_delete=fields.CASCADE
    )
    endpoint_id: int
    event_id = fields.BigIntField(null=True)  # the outbox event; null for test messages
    event_type = fields.CharField(max_length=100)
    message_id = fields.CharField(max_length=64, unique=True)  # the `webhook-id`
    body = fields.TextField()  # exactly the bytes sent (UTF-8), the same on every attempt
    status = fields.CharField(max_length=16, default=DeliveryStatus.PENDING.value)
    attempt_count = fields.IntField(default=0)  # attempts of the current round
    next_attempt_at = fields.DatetimeField(null=True)
    last_status_code = fields.IntField(null=True)
    last_error = fields.TextField(null=True)
    delivered_at = fields.DatetimeField(null=True)

    class Meta:
        table = "webhook_deliveries"
        unique_together = (("event_id", "endpoint_id"),)
        indexes = (("tenant_id", "endpoint_id", "status"),)


class WebhookAttempt(TenantModel):
    delivery: fields.ForeignKeyRelation[WebhookDelivery] = fields.ForeignKeyField(
        "switchboard.WebhookDelivery", related_name="attempts", on_delete=fields.CASCADE
    )
    delivery_id: int
    number = fields.IntField()  # 1, 2, … across the delivery's whole life
    timestamp = fields.BigIntField()  # the signed `webhook-timestamp`
    status_code = fields.IntField(null=True)
    duration_ms = fields.IntField(null=True)
    response_body = fields.TextField(null=True)  # at most 2 KB
    error = fields.TextField(null=True)
    finished_at = fields.DatetimeField(null=True)  # null while in flight or if the worker died
    manual = fields.BooleanField(default=False)  # started by resendWebhookDelivery / a test

    class Meta:
        table = "webhook_attempts"
