"""The transactional outbox: domain events written with the change that caused them.

A relay publishes unpublished rows on the event bus after commit; a row left
unpublished by a crash is picked up by the relay's next poll, so no event is lost,
and a rolled-back change never produces one.
"""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class OutboxEvent(Model):
    """A domain event (`contact.created`, `member.joined`…) of one tenant."""

    id = fields.BigIntField(primary_key=True)
    tenant: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.Tenant", related_name=False, on_delete=fields.CASCADE, db_index=True
    )
    tenant_id: int
    type = fields.CharField(max_length=100)
    data: fields.Field[dict[str, Any]] = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)
    published_at = fields.DatetimeField(null=True, db_index=True)
    # Listener failures: the relay retries the event a few times, then publishes it anyway.
    relay_attempts = fields.IntField(default=0)
    last_error = fields.TextField(null=True)

    class Meta:
        table = "outbox_events"
