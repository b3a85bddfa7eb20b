"""The completion request's checks: BAD_USER_INPUT with a detail per field, raised before
anything is reserved or stored, so a bad request costs neither quota nor rows."""

from __future__ import annotations

import re

from kit.errors import BadUserInput
from models.ai import MessageRole
from resolvers.ai.types import ChatRequest
from resolvers.context import Context

MAX_MESSAGES = 100
MAX_MESSAGE_CHARS = 100_000
MAX_PROMPT_CHARS = 400_000
_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-/]{0,63}$")


def clean_request(ctx: Context, request: ChatRequest) -> tuple[list[dict[str, str]], str]:
    """The messages as sent upstream (roles in lower case) and the model, or
    BAD_USER_INPUT naming every field at fault at once."""
    settings = ctx.settings
    details: dict[str, str] = {}
    messages: list[dict[str, str]] = []
    if not request.messages:
        details["messages"] = "must contain at least one message"
    elif len(request.messages) > MAX_MESSAGES:
        details["messages"] = f"at most {MAX_MESSAGES} messages"
    total = 0
    for i, message in enumerate(request.messages[:MAX_MESSAGES]):
        role = str(message.role).upper()
        if role not in MessageRole.__members__:
            details[f"messages.{i}.role"] = "must be SYSTEM, USER or ASSISTANT"
        if not message.content.strip():
            details[f"messages.{i}.content"] = "must not be empty"
        elif len(message.content) > MAX_MESSAGE_CHARS:
            details[f"messages.{i}.content"] = f"at most {MAX_MESSAGE_CHARS} characters"
        total += len(message.content)
        messages.append({"role": role.lower(), "content": message.content})
    if total > MAX_PROMPT_CHARS:
        details["messages"] = f"at most {MAX_PROMPT_CHARS} characters in all"
    if messages and not details and messages[-1]["role"] == "assistant":
        details["messages"] = "the last message must be from the user or the system"
    model = (request.model or settings.ai_default_model).strip()
    if not _MODEL_RE.match(model):
        details["model"] = "is not a model name"
    if request.temperature is not None and not 0 <= request.temperature <= 2:
        details["temperature"] = "must be between 0 and 2"
    if request.max_tokens is not None and not (
        1 <= request.max_tokens <= settings.ai_max_output_tokens
    ):
        details["maxTokens"] = f"must be between 1 and {settings.ai_max_output_tokens}"
    if details:
        raise BadUserInput("Invalid completion request.", details=details)
    return messages, model
