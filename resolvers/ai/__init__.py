"""AI completions: one path for plain and streamed answers, conversations, and the bill.

Every completion goes the same way:

1. check the input (coded BAD_USER_INPUT, nothing stored): `validation`;
2. resolve the credential (user → tenant → system → sandbox, `resolvers.credentials`):
   `vendor`;
3. reserve the most the completion can cost in the tenant's monthly token quota,
   atomically in the store: `quota` (and `resolvers.ai_quota`, the store's side) —
   steps 1 to 3 in order are `plan.make_plan`;
4. store the conversation and the new messages while the answer is on its way, so the
   database write does not delay the first token: `prompts`;
5. wait for (`completion`) or stream (`streaming`) the answer; save it, and one `AiUsage`
   row with the tokens, latency and cost, which settles the reservation in the same
   transaction: `ledger` (estimates and prices: `prices`).

Reservations, prompt rows and bills of completions that start or end at the same moment
are written together (`resolvers.group_commit`). The rest: the model list (`model_list`),
the conversation reads (`conversations`), the usage report (`usage`) and the data classes
(`types`). The CRM task summary, which goes through this path, is `resolvers.tasks`.

This module is the area's public face: what schema/ai.py and the tests call.
"""

from __future__ import annotations

from resolvers.ai.completion import create_chat_completion
from resolvers.ai.conversations import (
    conversations_by_ids,
    get_conversation,
    list_conversations,
    list_messages,
    messages_by_ids,
)
from resolvers.ai.model_list import ai_models
from resolvers.ai.prices import cost_of, estimate_prompt_tokens, estimate_tokens, prices
from resolvers.ai.quota import ai_quota, quota_state
from resolvers.ai.streaming import stream_chat_completion
from resolvers.ai.types import (
    ChatRequest,
    CompletionResult,
    MessageIn,
    ModelOption,
    StreamEvent,
    Usage,
    UsageGroup,
    UsageReport,
)
from resolvers.ai.usage import ai_usage

__all__ = [
    "ChatRequest",
    "CompletionResult",
    "MessageIn",
    "ModelOption",
    "StreamEvent",
    "Usage",
    "UsageGroup",
    "UsageReport",
    "ai_models",
    "ai_quota",
    "ai_usage",
    "conversations_by_ids",
    "cost_of",
    "create_chat_completion",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "get_conversation",
    "list_conversations",
    "list_messages",
    "messages_by_ids",
    "prices",
    "quota_state",
    "stream_chat_completion",
]
