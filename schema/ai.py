"""AI completions: models, conversations, plain and streamed completions, usage and quota."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, ClassVar, Self

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.ai import ChatMessage as ChatMessageRow
from models.ai import Conversation as ConversationRow
from models.ai import MessageRole, MessageStatus
from resolvers import ai, tasks
from schema.accounts import User
from schema.permissions import mutation, query, subscription
from schema.relay import After, Connection, First, ModelNode, decode_id, encode_id

strawberry.enum(MessageRole, name="ChatRole", description="Who wrote a chat message.")
strawberry.enum(
    MessageStatus,
    name="ChatMessageStatus",
    description="COMPLETE: the whole text. STREAMING: still arriving. INTERRUPTED: the "
    "client left mid-answer; the text is the part received. FAILED: the provider failed "
    "mid-answer; the text is the part received.",
)


@strawberry.enum(description="Why the model stopped writing.")
class FinishReason(Enum):
    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"
    OTHER = "other"


def finish_reason(value: str | None) -> FinishReason | None:
    if value is None:
        return None
    try:
        return FinishReason(value)
    except ValueError:
        return FinishReason.OTHER


@strawberry.type(description="A model the caller's AI credential can use, with its price.")
class AiModel:
    name: str = strawberry.field(description="Model name to pass as `model`.")
    owned_by: str = strawberry.field(description="Who publishes the model.")
    input_price_per_million: Decimal = strawberry.field(
        description="USD per million prompt tokens (AI_PRICES_PER_MILLION)."
    )
    output_price_per_million: Decimal = strawberry.field(
        description="USD per million completion tokens (AI_PRICES_PER_MILLION)."
    )


@strawberry.type(description="Tokens and cost of one completion.")
class TokenUsage:
    prompt_tokens: int = strawberry.field(description="Tokens in the prompt.")
    completion_tokens: int = strawberry.field(description="Tokens in the answer received.")
    total_tokens: int = strawberry.field(description="Prompt plus completion tokens.")
    estimated: bool = strawberry.field(
        description="The provider reported no usage (the stream ended early), so the counts "
        "are the gateway's estimate: one token per chunk received, and a word-and-punctuation "
        "count of the prompt."
    )
    cost: Decimal = strawberry.field(description="USD, from the model's price table.")

    @classmethod
    def of(cls, usage: ai.Usage) -> TokenUsage:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            estimated=usage.estimated,
            cost=usage.cost,
        )


@strawberry.type(description="One message of a conversation.")
class ChatMessage(ModelNode):
    _model: ClassVar[type] = ChatMessageRow
    _permission: ClassVar[str] = "ai:use"
    id: relay.NodeID[int]
    role: MessageRole = strawberry.field(description="Who wrote it.")
    content: str = strawberry.field(description="The text (the part received, unless COMPLETE).")
    status: MessageStatus = strawberry.field(description="Whether the text is whole.")
    finish_reason: FinishReason | None = strawberry.field(
        description="Why the model stopped (assistant messages)."
    )
    model: str | None = strawberry.field(description="Model that wrote it (assistant messages).")
    created_at: dt.datetime = strawberry.field(description="When it was stored.")

    @classmethod
    def from_row(cls, row: Any) -> Self:
        return cls(
            id=row.id,
            role=row.role,
            content=row.content,
            status=row.status,
            finish_reason=finish_reason(row.finish_reason),
            model=row.model,
            created_at=row.created_at,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Any, required: bool = False
    ) -> list[Self | None]:
        ids = [int(i) if str(i).isdigit() else -1 for i in node_ids]
        rows = await ai.messages_by_ids(info.context, ids)
        return [None if r is None else cls.from_row(r) for r in rows]


@strawberry.type(description="A conversation with the AI; only its owner sees it.")
class Conversation(ModelNode):
    _model: ClassVar[type] = ConversationRow
    _permission: ClassVar[str] = "ai:use"
    id: relay.NodeID[int]
    title: str = strawberry.field(description="The start of the first question.")
    model: str = strawberry.field(description="Model of the latest answer.")
    created_at: dt.datetime = strawberry.field(description="When it started.")
    updated_at: dt.datetime = strawberry.field(description="When it last changed.")

    @strawberry.field(description="Its messages, oldest first.")
    async def messages(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[ChatMessage]:
        page = await ai.list_messages(info.context, self._row, first=first, after=after)  # type: ignore[attr-defined]
        return Connection.of(page, ChatMessage.from_row)

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Any, required: bool = False
    ) -> list[Self | None]:
        ids = [int(i) if str(i).isdigit() else -1 for i in node_ids]
        rows = await ai.conversations_by_ids(info.context, ids)
        return [None if r is None else cls.from_row(r) for r in rows]


@strawberry.input(description="One message of the prompt.")
class ChatMessageInput:
    role: MessageRole = strawberry.field(description="SYSTEM, USER or ASSISTANT.")
    content: str = strawberry.field(description="The text.")


@strawberry.input(description="A completion request.")
class CreateChatCompletionInput:
    messages: list[ChatMessageInput] = strawberry.field(
        description="The new messages (1–100), the last from the user or the system. With "
        "`conversationId`, the conversation's earlier messages go first."
    )
    model: str | None = strawberry.field(
        default=None, description="Model name (see `aiModels`); default AI_DEFAULT_MODEL."
    )
    temperature: float | None = strawberry.field(
        default=None, description="Sampling temperature, 0 to 2."
    )
    max_tokens: int | None = strawberry.field(
        default=None,
        description="Longest answer in tokens (at most AI_MAX_OUTPUT_TOKENS, the default). "
        "The prompt and this many tokens are held in the organization's monthly quota while "
        "the completion runs (QUOTA_EXCEEDED when they do not fit).",
    )
    conversation_id: relay.GlobalID | None = strawberry.field(
        default=None, description="Continue this conversation of yours; default: a new one."
    )
    knowledge: bool = strawberry.field(
        default=False,
        description="Ground the answer in the organization's knowledge base: the chunks "
        "that answer the last user message are given to the model, which cites them as [n] "
        "(see `citations`); with none, it is told to say the knowledge base does not cover "
        "it. Needs the knowledge:read permission too.",
    )

    def to_request(self) -> ai.ChatRequest:
        return ai.ChatRequest(
            messages=[ai.MessageIn(m.role.value, m.content) for m in self.messages],
            model=self.model,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            conversation_id=(
                None
                if self.conversation_id is None
                else decode_id(self.conversation_id, "Conversation")
            ),
            knowledge=self.knowledge,
        )


@strawberry.type(description="A knowledge-base chunk a grounded answer rests on.")
class AiCitation:
    number: int = strawberry.field(description="The [n] the answer cites it with.")
    title: str = strawberry.field(description="The title of the page or document it is from.")
    url: str | None = strawberry.field(description="Where it can be read, when it has a URL.")
    excerpt: str = strawberry.field(
        description="A passage of it, HTML-escaped, the question's words in <mark>."
    )
    source_id: relay.GlobalID = strawberry.field(description="Its KnowledgeSource.")
    chunk_id: relay.GlobalID = strawberry.field(description="The chunk.")

    @classmethod
    def all_of(cls, hits: list[Any] | None) -> list[AiCitation]:
        return [
            cls(
                number=n,
                title=hit.chunk.title or hit.source.title,
                url=hit.chunk.url or hit.source.url,
                excerpt=hit.excerpt,
                source_id=encode_id("KnowledgeSource", hit.source.id),
                chunk_id=encode_id("KnowledgeChunk", hit.chunk.id),
            )
            for n, hit in enumerate(hits or [], 1)
        ]


@strawberry.type(description="The answer of a completion.")
class ChatCompletionPayload:
    conversation: Conversation = strawberry.field(description="The conversation it belongs to.")
    message: ChatMessage = strawberry.field(description="The assistant's answer.")
    usage: TokenUsage = strawberry.field(description="Tokens and cost of this completion.")
    citations: list[AiCitation] = strawberry.field(
        description="With `knowledge: true`: the chunks given to the model, as [1], [2]…"
    )

    @classmethod
    def of(cls, result: ai.CompletionResult) -> ChatCompletionPayload:
        return cls(
            conversation=Conversation.from_row(result.conversation),
            message=ChatMessage.from_row(result.message),
            usage=TokenUsage.of(result.usage),
            citations=AiCitation.all_of(result.citations),
        )


@strawberry.type(description="A piece of a streamed answer.")
class ChatCompletionChunk:
    delta: str = strawberry.field(
        description="Text since the previous chunk (several tokens when they arrive together)."
    )
    index: int = strawberry.field(description="Position of this chunk in the stream, from 0.")
    finish_reason: FinishReason | None = strawberry.field(description="Set on the last chunk only.")
    usage: TokenUsage | None = strawberry.field(description="Set on the last chunk only.")
    conversation_id: relay.GlobalID = strawberry.field(
        description="The conversation the answer is stored in."
    )
    message_id: relay.GlobalID = strawberry.field(description="The answer's message.")
    citations: list[AiCitation] | None = strawberry.field(
        default=None,
        description="With `knowledge: true`, on the last chunk: the chunks given to the model.",
    )


@strawberry.input(description="Which day's tasks to summarise.")
class GenerateTaskSummaryInput:
    date: dt.date = strawberry.field(description="The day (UTC) the tasks are due.")
    model: str | None = strawberry.field(
        default=None, description="Model name; default AI_DEFAULT_MODEL."
    )


@strawberry.type(description="Calls, tokens and cost of a group of completions.")
class AiUsageFigures:
    calls: int = strawberry.field(description="Completions.")
    prompt_tokens: int = strawberry.field(description="Prompt tokens.")
    completion_tokens: int = strawberry.field(description="Completion tokens.")
    total_tokens: int = strawberry.field(description="Prompt plus completion tokens.")
    cost: Decimal = strawberry.field(description="USD.")

    @classmethod
    def of(cls, group: ai.UsageGroup) -> AiUsageFigures:
        return cls(
            calls=group.calls,
            prompt_tokens=group.prompt_tokens,
            completion_tokens=group.completion_tokens,
            total_tokens=group.total_tokens,
            cost=group.cost,
        )


@strawberry.type(description="Usage of one model.")
class AiModelUsage:
    model: str = strawberry.field(description="Model name.")
    usage: AiUsageFigures = strawberry.field(description="Its figures.")


@strawberry.type(description="Usage of one member (or of API keys).")
class AiUserUsage:
    user: User | None = strawberry.field(description="The member; null for API keys.")
    usage: AiUsageFigures = strawberry.field(description="Their figures.")


@strawberry.type(description="AI usage of the organization over a period.")
class AiUsageReport:
    start: dt.date = strawberry.field(name="from", description="First day (UTC), included.")
    end: dt.date = strawberry.field(name="to", description="Last day (UTC), included.")
    total: AiUsageFigures = strawberry.field(description="All completions in the period.")
    by_model: list[AiModelUsage] = strawberry.field(description="Per model, largest first.")
    by_user: list[AiUserUsage] = strawberry.field(description="Per member, largest first.")


@strawberry.type(description="The organization's monthly AI token quota.")
class AiQuota:
    used: int = strawberry.field(description="Tokens used this calendar month (UTC).")
    limit: int = strawberry.field(description="Tokens allowed per month.")


@strawberry.type
class Query:
    @query(
        operation=ai.ai_models,
        description="Models your AI credential (yours, the organization's, the system's or "
        "the sandbox) can use, with prices.",
    )
    async def ai_models(self, info: Info) -> list[AiModel]:
        return [
            AiModel(
                name=m.id,
                owned_by=m.owned_by,
                input_price_per_million=m.input_price,
                output_price_per_million=m.output_price,
            )
            for m in await ai.ai_models(info.context)
        ]

    @query(operation=ai.list_conversations, description="Your conversations, newest first.")
    async def conversations(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[Conversation]:
        page = await ai.list_conversations(info.context, first=first, after=after)
        return Connection.of(page, Conversation.from_row)

    @query(operation=ai.get_conversation, description="One of your conversations.")
    async def conversation(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="Conversation id.")],
    ) -> Conversation:
        row = await ai.get_conversation(info.context, decode_id(id, "Conversation"))
        return Conversation.from_row(row)

    @query(
        operation=ai.ai_usage,
        description="Tokens and cost of the organization's completions, by model and member.",
    )
    async def ai_usage(
        self,
        info: Info,
        start: Annotated[
            dt.date, strawberry.argument(name="from", description="First day (UTC), included.")
        ],
        end: Annotated[
            dt.date, strawberry.argument(name="to", description="Last day (UTC), included.")
        ],
    ) -> AiUsageReport:
        report = await ai.ai_usage(info.context, start, end)
        return AiUsageReport(
            start=report.start,
            end=report.end,
            total=AiUsageFigures.of(report.total),
            by_model=[
                AiModelUsage(model=g.key, usage=AiUsageFigures.of(g)) for g in report.by_model
            ],
            by_user=[
                AiUserUsage(
                    user=None if u is None else User.from_row(u), usage=AiUsageFigures.of(g)
                )
                for u, g in report.by_user
            ],
        )

    @query(operation=ai.ai_quota, description="The organization's monthly AI token quota.")
    async def ai_quota(self, info: Info) -> AiQuota:
        used, limit = await ai.ai_quota(info.context)
        return AiQuota(used=used, limit=limit)


@strawberry.type
class Mutation:
    @mutation(
        operation=ai.create_chat_completion,
        description="Ask the AI and wait for the whole answer; stored in a conversation and "
        "billed to the organization (QUOTA_EXCEEDED past its monthly tokens).",
    )
    async def create_chat_completion(
        self, info: Info, input: CreateChatCompletionInput
    ) -> ChatCompletionPayload:
        return ChatCompletionPayload.of(
            await ai.create_chat_completion(info.context, input.to_request())
        )

    @mutation(
        operation=tasks.generate_task_summary,
        description="Summarise your CRM tasks due on a day, through the AI; stored as a "
        "conversation.",
    )
    async def generate_task_summary(
        self, info: Info, input: GenerateTaskSummaryInput
    ) -> ChatCompletionPayload:
        return ChatCompletionPayload.of(
            await tasks.generate_task_summary(info.context, input.date, input.model)
        )


@strawberry.type
class Subscription:
    @subscription(
        operation=ai.stream_chat_completion,
        description="Ask the AI and receive the answer as it is written. Provider errors "
        "arrive as a coded error on the stream. Leaving early stops the provider and stores "
        "the part received as INTERRUPTED; only tokens received are billed.",
    )
    async def chat_completion(
        self, info: Info, input: CreateChatCompletionInput
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        async for event in ai.stream_chat_completion(info.context, input.to_request()):
            yield ChatCompletionChunk(
                delta=event.delta,
                index=event.index,
                finish_reason=finish_reason(event.finish_reason),
                usage=None if event.usage is None else TokenUsage.of(event.usage),
                conversation_id=encode_id("Conversation", event.conversation_id),
                message_id=encode_id("ChatMessage", event.message_id),
                citations=None if event.citations is None else AiCitation.all_of(event.citations),
            )
