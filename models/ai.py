"""AI completions: conversations, their messages, and one usage row per completion.

A conversation belongs to one tenant and one caller (a user, or an API key when a
machine calls); its messages keep the streamed answer once complete, or the part
that arrived before the client left (INTERRUPTED) or the vendor failed (FAILED).
`AiUsage` is the ledger that pays for it all: tokens, latency and cost per call,
summed for `aiUsage` and for the tenant's monthly token quota.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields

from models.base import TenantModel


class MessageRole(StrEnum):
    SYSTEM = "SYSTEM"
    USER = "USER"
    ASSISTANT = "ASSISTANT"


class MessageStatus(StrEnum):
    COMPLETE = "COMPLETE"  # the whole answer (or the prompt as sent)
    STREAMING = "STREAMING"  # the answer is still arriving
    INTERRUPTED = "INTERRUPTED"  # the client left; content is the partial answer received
    FAILED = "FAILED"  # the vendor failed mid-way; content is the partial answer received


class UsageOutcome(StrEnum):
    COMPLETE = "COMPLETE"
    INTERRUPTED = "INTERRUPTED"
    FAILED = "FAILED"


class Conversation(TenantModel):
    owner: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.CASCADE
    )
    owner_id: int | None
    api_key_id = fields.BigIntField(null=True)  # set when a machine (API key) owns it
    title = fields.CharField(max_length=200, default="")
    model = fields.CharField(max_length=64)

    class Meta:
        table = "ai_conversations"
        indexes = (("tenant_id", "owner_id", "updated_at"),)


class ChatMessage(TenantModel):
    conversation: fields.ForeignKeyRelation[Conversation] = fields.ForeignKeyField(
        "switchboard.Conversation", related_name=False, on_delete=fields.CASCADE
    )
    conversation_id: int
    role = fields.CharEnumField(MessageRole, max_length=16)
    content = fields.TextField(default="")
    status = fields.CharEnumField(MessageStatus, max_length=16, default=MessageStatus.COMPLETE)
    finish_reason = fields.CharField(max_length=32, null=True)
    model = fields.CharField(max_length=64, null=True)

    class Meta:
        table = "ai_messages"
        indexes = (("tenant_id", "conversation_id", "id"),)


class AiUsage(TenantModel):
    """One completion's bill: who, which model, how many tokens, how long, how much."""

    owner: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "switchboard.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    owner_id: int | None
    api_key_id = fields.BigIntField(null=True)
    conversation: fields.ForeignKeyNullableRelation[Conversation] = fields.ForeignKeyField(
        "switchboard.Conversation", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    conversation_id: int | None
    operation = fields.CharField(max_length=32)  # chat, chat_stream, task_summary
    model = fields.CharField(max_length=64)
    credential_source = fields.CharField(max_length=16)  # USER, TENANT, SYSTEM, SANDBOX
    prompt_tokens = fields.IntField(default=0)
    completion_tokens = fields.IntField(default=0)
    total_tokens = fields.IntField(default=0)
    estimated = fields.BooleanField(default=False)  # counts estimated, vendor usage missing
    cost = fields.DecimalField(max_digits=16, decimal_places=8, default=0)
    latency_ms = fields.IntField(default=0)
    first_token_ms = fields.IntField(null=True)
    outcome = fields.CharEnumField(UsageOutcome, max_length=16)
    error_code = fields.CharField(max_length=64, null=True)

    class Meta:
        table = "ai_usage"
        indexes = (("tenant_id", "created_at"),)


class AiQuotaMonth(TenantModel):
    """A tenant's AI tokens for one calendar month (UTC): billed (`used`, the ledger's
    sum) and held by completions still running (`reserved`).

    The quota is enforced on this one row, by a conditional UPDATE that adds a
    completion's reservation only while `used + reserved` stays within the quota: the
    row lock (PostgreSQL) or the write lock (SQLite) makes concurrent completions, in
    any number of processes, take turns, so the sum never passes the quota.
    """

    month = fields.IntField()  # YYYYMM (UTC)
    used = fields.BigIntField(default=0)
    reserved = fields.BigIntField(default=0)

    class Meta:
        table = "ai_quota_months"
        unique_together = (("tenant_id", "month"),)


class AiReservation(TenantModel):
    """The tokens one running completion holds in its month's `reserved` until it is
    billed. Billing deletes the row and releases what it held; a row whose process died
    before billing is released once it expires (`resolvers.ai_quota.sweep`)."""

    month = fields.IntField()  # YYYYMM (UTC), the AiQuotaMonth it is counted in
    tokens = fields.BigIntField()
    expires_at = fields.DatetimeField()

    class Meta:
        table = "ai_reservations"
        indexes = (("tenant_id", "expires_at"),)
