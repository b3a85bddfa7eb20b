"""The AI area's data: what a caller asks for, what it gets back, and the plan a completion
carries from its checks to its bill. Plain data classes, so that schema/ai.py and every
step of the completion path share them without importing one another."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kit.security import Principal
from models.accounts import User
from models.ai import AiUsage, ChatMessage, Conversation
from providers.openai import OpenAICredential
from resolvers import ai_quota as quotas


@dataclass(frozen=True, slots=True)
class MessageIn:
    role: str  # SYSTEM, USER, ASSISTANT
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: Sequence[MessageIn]
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    conversation_id: int | None = None
    knowledge: bool = False  # ground the answer in the knowledge base, with citations


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    cost: Decimal

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class CompletionResult:
    conversation: Conversation
    message: ChatMessage
    usage: Usage
    citations: list[Any] = field(default_factory=list)  # knowledge hits the answer rests on


@dataclass(slots=True)
class StreamEvent:
    delta: str
    index: int
    conversation_id: int
    message_id: int
    finish_reason: str | None = None
    usage: Usage | None = None
    citations: list[Any] | None = None  # on the last event of a knowledge-grounded stream


@dataclass(frozen=True, slots=True)
class ModelOption:
    id: str
    owned_by: str
    input_price: Decimal
    output_price: Decimal


@dataclass(slots=True)
class UsageGroup:
    key: str  # the model, or the user id as text ("" for API keys)
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class UsageReport:
    start: dt.date
    end: dt.date
    total: UsageGroup
    by_model: list[UsageGroup]
    by_user: list[tuple[User | None, UsageGroup]]


@dataclass
class Plan:
    """Everything a completion needs, decided before the upstream call."""

    principal: Principal
    request_messages: list[dict[str, str]]  # the caller's new messages
    messages: list[dict[str, str]]  # history + new, as sent upstream
    model: str
    temperature: float | None
    max_tokens: int | None
    cred: OpenAICredential
    source: str
    operation: str
    conversation: Conversation | None  # existing conversation, or None to create one
    title: str = ""
    # The rows' ids, given by the gateway before they are written (`prompts.assign_ids`).
    conversation_id: int | None = None
    message_ids: list[int] = field(default_factory=list)  # the caller's new messages
    answer_id: int | None = None
    newest_message_id: int = 0  # of the existing conversation: new ids sort after it
    created: list[Any] = field(default_factory=list)  # rows to undo if the vendor refuses
    reservation: quotas.Reservation | None = None  # held in the quota until billed
    citations: list[Any] = field(default_factory=list)  # knowledge hits given to the model

    @property
    def vendor_user(self) -> str:
        """An opaque per-caller id for the vendor's abuse monitoring."""
        return hashlib.sha256(f"switchboard:{self.principal.key}".encode()).hexdigest()[:24]


# What a bill writes: the answer's final state (None when there is no answer), the
# ledger row, and the reservation it settles (None when settled already).
Bill = tuple[ChatMessage | None, AiUsage, quotas.Reservation | None]
