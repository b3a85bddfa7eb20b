"""The AI area's process-wide state, on `Services.ai` (one per app, made on first use).

It holds the writers that batch the completions' store writes (`resolvers.group_commit`:
quota reservations, prompt rows, bills), the number of streams this process is serving
(which widens each stream's coalescing window, `streaming`), and the vendor's model list
per credential (`model_list`). A writer belongs to the event loop it was made on, so each
is made again when a new loop asks for it (tests and the CLI run several loops in one
process).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kit.ttl_cache import TTLCache
from models.ai import ChatMessage, Conversation
from providers.openai import ModelInfo
from resolvers import ai_quota as quotas
from resolvers.ai.types import Bill, Plan
from resolvers.context import Services
from resolvers.group_commit import GroupCommit

# (credential fingerprint, organization, base URL): what decides which models a key sees.
ModelsKey = tuple[str, str | None, str | None]


@dataclass
class AiState:
    models: TTLCache[ModelsKey, list[ModelInfo]] = field(default_factory=TTLCache)
    live_streams: int = 0
    reservations: GroupCommit[quotas.Want, quotas.Reservation | None] | None = None
    prompts: GroupCommit[Plan, tuple[Conversation, ChatMessage]] | None = None
    ledger: GroupCommit[Bill, None] | None = None


def ai_state(services: Services) -> AiState:
    if services.ai is None:
        services.ai = AiState()
    return services.ai
