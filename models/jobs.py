"""Durable jobs: a row per unit of background work, claimed by workers with a lease.

A job outlives the request (and the process) that enqueued it: it is written in the
same transaction as the change that caused it, and a worker that dies mid-job loses
its lease, so another worker picks the job up again.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the last try failed; the next one is due at run_at
    DEAD = "dead"  # out of attempts, or a permanent failure: waits for a person (retryJob)


class Job(Model):
    """One unit of background work. `tenant` is null for system jobs (periodic ones)."""

    id = fields.BigIntField(primary_key=True)
    kind = fields.CharField(max_length=100, db_index=True)
    payload: fields.Field[dict[str, Any]] = fields.JSONField(default=dict)
    tenant: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.Tenant",
        related_name=False,
        null=True,
        on_delete=fields.CASCADE,
        db_index=True,
    )
    tenant_id: int | None
    status = fields.CharField(max_length=16, default=JobStatus.QUEUED.value)
    attempts = fields.IntField(default=0)
    max_attempts = fields.IntField(default=8)
    run_at = fields.DatetimeField()
    locked_by = fields.CharField(max_length=120, null=True)
    lease_expires_at = fields.DatetimeField(null=True)
    last_error = fields.TextField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)
    # Dedupe: a second enqueue with the same key returns the first job.
    unique_key = fields.CharField(max_length=255, null=True, unique=True)

    class Meta:
        table = "jobs"
        indexes = (("status", "run_at"),)
