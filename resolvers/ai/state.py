"""The AI area's process-wide state, on `Services.ai` (one per app, made on first use).

It holds the writers that batch the completions' store writes (`resolvers.group_commit`:
quota reservations, prompt rows, bills), the stocks of ids the prompts' rows are named
with before they are written (`models.ids`) and the prompts being written
(`PendingPrompts`), the number of streams this process is serving (which widens each
stream's coalescing window, `streaming`), and the vendor's model list per credential
(`model_list`). A writer or a stock belongs to the event loop it was made on, so each is
made again when a new loop asks for it (tests and the CLI run several loops in one
process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from kit.ttl_cache import TTLCache
from models.ai import ChatMessage, Conversation
from models.ids import IdBlock
from providers.openai import ModelInfo
from resolvers import ai_quota as quotas
from resolvers.ai.types import Bill, Plan
from resolvers.context import Services
from resolvers.group_commit import GroupCommit

# (credential fingerprint, organization, base URL): what decides which models a key sees.
ModelsKey = tuple[str, str | None, str | None]


@dataclass(frozen=True, slots=True)
class PendingPrompt:
    owner: str  # the caller's principal key
    conversation_id: int
    message_ids: frozenset[int]
    named: asyncio.Event | None = None  # set once an event named the ids (None: at once)


class PendingPrompts:
    """Prompts whose rows are being written while their stream already named them.

    A client that receives a conversation's id in the first event and asks for it at
    once must find it: reads in this process wait for the writes that will make what
    they look for (by conversation, message or owner) before they query; only for writes
    whose ids are out already (a stream still waiting for its first token holds no read
    up). The wait is for this process's writes only; another process sees the rows at
    their commit, normally milliseconds after the first event."""

    def __init__(self) -> None:
        self.writes: dict[asyncio.Future[Any], PendingPrompt] = {}

    def add(self, write: asyncio.Future[Any], prompt: PendingPrompt) -> None:
        self.writes[write] = prompt
        write.add_done_callback(lambda done: self.writes.pop(done, None))

    async def wait(
        self,
        *,
        owner: str | None = None,
        conversations: Collection[int] = (),
        messages: Collection[int] = (),
    ) -> None:
        if not self.writes:
            return
        loop = asyncio.get_running_loop()
        waits = [
            write
            for write, prompt in self.writes.items()
            if write.get_loop() is loop
            and (prompt.named is None or prompt.named.is_set())
            and (
                prompt.owner == owner
                or prompt.conversation_id in conversations
                or not prompt.message_ids.isdisjoint(messages)
            )
        ]
        if waits:
            await asyncio.wait(waits)  # a failed write is the reader's NOT_FOUND


@dataclass
class AiState:
    models: TTLCache[ModelsKey, list[ModelInfo]] = field(default_factory=TTLCache)
    live_streams: int = 0
    reservations: GroupCommit[quotas.Want, quotas.Reservation | None] | None = None
    prompts: GroupCommit[Plan, tuple[Conversation, ChatMessage]] | None = None
    ledger: GroupCommit[Bill, None] | None = None
    conversation_ids: IdBlock | None = None
    message_ids: IdBlock | None = None
    pending: PendingPrompts = field(default_factory=PendingPrompts)


def ai_state(services: Services) -> AiState:
    if services.ai is None:
        services.ai = AiState()
    return services.ai
