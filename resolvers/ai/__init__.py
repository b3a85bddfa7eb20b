"""AI completions: one path for plain and streamed answers, conversations, and the bill.

Every completion goes the same way:

1. check the input (coded BAD_USER_INPUT, nothing stored);
2. resolve the credential (user → tenant → system → sandbox, `resolvers.credentials`);
3. reserve the most the completion can cost (the prompt's estimate plus `max_tokens`, or
   AI_MAX_OUTPUT_TOKENS) in the tenant's monthly token quota, atomically in the store
   (`resolvers.ai_quota`): QUOTA_EXCEEDED before any upstream call when it does not fit,
   so concurrent completions, in any number of processes, never use more than the quota;
4. store the conversation and the new messages while the answer is on its way, so the
   database write does not delay the first token: a plain completion stores them while
   its request is out (and undoes them when the vendor refuses it); a stream stores
   them once the vendor accepted the request (its response headers arrived), so that
   in a burst of streams the upstream requests leave first, and a refusal stores
   nothing;
5. stream (or wait for) the answer; save it, and one `AiUsage` row with the tokens,
   latency and cost, which settles the reservation in the same transaction (releases
   it and counts the tokens used). A completion that ends without a bill (cancelled
   before the vendor answered) releases its reservation; one whose process died
   leaves it to expire.

Streams coalesce: a reader task drains the vendor's SSE chunks into a buffer and the
subscription yields whatever has accumulated each time the consumer is ready, at most
one event per window after the first delta (which goes out at once, as does the last
event with the finish reason and usage), so a busy process sends fewer, larger events
instead of falling behind. The window is `AI_STREAM_COALESCE_MS`, widened when many
streams share the process so that all of them together send about
`AI_STREAM_MAX_EVENTS_PER_SECOND` events: each event costs a GraphQL execution and a
WebSocket frame whatever its size (300 streams at 50 tokens/s with 50 ms windows kept
one core busy; with 100 ms windows, ~75 %). When the subscriber completes,
disconnects or is cancelled, the vendor stream is closed at once and the answer so far
is saved as INTERRUPTED.

Billing counts what was received. When the vendor's usage chunk arrives, its counts
are used. When it does not (the client left, the vendor failed mid-way), the counts
are estimates, flagged `estimated`: completion tokens = the number of content chunks
received (OpenAI streams one token per chunk); prompt tokens = `estimate_tokens`
over the prompt — one token per word or punctuation mark, and never fewer than one
per four characters — plus 3 per message for the chat framing. No tokenizer
download is needed (tiktoken fetches its encodings at run time).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Generic, TypeVar

from tortoise.expressions import Subquery
from tortoise.functions import Count, Sum
from tortoise.transactions import in_transaction

from kit.errors import (
    BadUserInput,
    Forbidden,
    GatewayError,
    NotFound,
    QuotaExceeded,
)
from kit.security import Principal
from models.accounts import User
from models.ai import (
    AiUsage,
    ChatMessage,
    Conversation,
    MessageRole,
    MessageStatus,
    UsageOutcome,
)
from models.tasks import Task, TaskStatus
from models.tenancy import scoped
from models.tenants import Tenant
from providers.errors import ProviderError
from providers.openai import (
    PROVIDER,
    ChatStream,
    Completion,
    ModelInfo,
    OpenAICredential,
    OpenAIProvider,
    StreamChunk,
)
from resolvers import ai_quota as quotas
from resolvers import credentials
from resolvers.context import Context, Services
from resolvers.operations import operation
from resolvers.pagination import Order, Page, page_of
from resolvers.upstream import provider_registry, to_gateway_error

log = logging.getLogger("switchboard.ai")

MAX_MESSAGES = 100
MAX_MESSAGE_CHARS = 100_000
MAX_PROMPT_CHARS = 400_000
HISTORY_MESSAGES = 50
MODELS_CACHE_SECONDS = 300.0
_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-/]{0,63}$")
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
MILLION = Decimal(1_000_000)
CENTS8 = Decimal("0.00000001")
T = TypeVar("T")
R = TypeVar("R")


# Inputs and answers ---------------------------------------------------------------------


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


@dataclass(slots=True)
class StreamEvent:
    delta: str
    index: int
    conversation_id: int
    message_id: int
    finish_reason: str | None = None
    usage: Usage | None = None


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


# Estimates and prices --------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """Tokenizer-free token estimate: words and punctuation marks, at least chars/4."""
    if not text:
        return 0
    return max(len(_TOKEN_RE.findall(text)), (len(text) + 3) // 4)


def estimate_prompt_tokens(messages: Sequence[dict[str, str]]) -> int:
    """The prompt estimate: each message's text plus 3 tokens of framing, plus 3 to prime."""
    return sum(estimate_tokens(m["content"]) + 3 for m in messages) + 3


def prices(services: Services, model: str) -> tuple[Decimal, Decimal]:
    """(input, output) USD per million tokens for `model` from AI_PRICES_PER_MILLION."""
    table = services.settings.ai_prices_per_million
    both = table.get(model)
    price_in = table.get(f"{model}:input", both)
    price_out = table.get(f"{model}:output", both)
    if price_in is None:
        price_in = table.get("default:input", table.get("default", Decimal(0)))
    if price_out is None:
        price_out = table.get("default:output", table.get("default", Decimal(0)))
    return Decimal(price_in), Decimal(price_out)


def cost_of(services: Services, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    price_in, price_out = prices(services, model)
    cost = (prompt_tokens * price_in + completion_tokens * price_out) / MILLION
    return cost.quantize(CENTS8, rounding=ROUND_HALF_UP)


# Provider, credential, errors ------------------------------------------------------------


def provider(services: Services) -> OpenAIProvider:
    """The process's OpenAI client: the registry builds, configures and closes it."""
    return provider_registry(services).openai()


async def _credential(ctx: Context) -> tuple[OpenAICredential, str]:
    resolved = await credentials.resolve_credential(ctx, PROVIDER)
    cred = OpenAICredential.of(
        resolved.secrets, resolved.base_url, own=resolved.own, guarded=resolved.guard_url
    )
    return cred, resolved.source.value


def gateway_error(error: ProviderError) -> GatewayError:
    """A vendor failure as the coded error the caller sees (never the key, never a trace).

    The shared mapping (`resolvers.upstream`), with the input field named for the two
    vendor refusals a caller can fix: a prompt too long for the model, an unknown model.
    """
    field = "model" if error.vendor_code == "model_not_found" else "messages"
    return to_gateway_error(error, field=field)


# Validation ------------------------------------------------------------------------------


def _clean(ctx: Context, request: ChatRequest) -> tuple[list[dict[str, str]], str]:
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


# Quota -----------------------------------------------------------------------------------


def _month_start(now: dt.datetime | None = None) -> dt.datetime:
    now = now or dt.datetime.now(dt.UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def quota_state(tenant_id: int, default_quota: int) -> tuple[int, int]:
    """(tokens used this calendar month (UTC), monthly quota) for the tenant."""
    tenant = await Tenant.filter(id=tenant_id).only("id", "ai_monthly_token_quota").first()
    quota = default_quota
    if tenant is not None and tenant.ai_monthly_token_quota is not None:
        quota = int(tenant.ai_monthly_token_quota)
    rows = (
        await AiUsage.filter(tenant_id=tenant_id, created_at__gte=_month_start())
        .annotate(used=Sum("total_tokens"))
        .values("used")
    )
    used = int(rows[0]["used"] or 0) if rows else 0
    return used, quota


def _reservation_tokens(ctx: Context, plan: _Plan) -> int:
    """The most a completion can cost: the prompt's estimate (words and punctuation, at
    least a token per four characters, plus framing) and every output token allowed."""
    return estimate_prompt_tokens(plan.messages) + (
        plan.max_tokens or ctx.settings.ai_max_output_tokens
    )


async def _reserve(ctx: Context, plan: _Plan) -> quotas.Reservation:
    """Hold the completion's maximum in the tenant's monthly quota, or QUOTA_EXCEEDED.

    Completions starting at the same moment reserve in one transaction (group commit,
    as their prompts are stored): one conditional UPDATE and one INSERT each, one commit
    for them all."""
    want = quotas.Want(
        tenant_id=plan.principal.tenant_id,
        month=quotas.month_of(),
        tokens=_reservation_tokens(ctx, plan),
        default_quota=ctx.settings.ai_monthly_token_quota,
    )
    writer = ctx.services.extras.get("ai_reservations")
    if writer is None or writer.loop is not asyncio.get_running_loop():
        writer = ctx.services.extras["ai_reservations"] = GroupCommit(quotas.reserve_batch)
    reservation: quotas.Reservation | None = await writer(want)
    if reservation is None:
        reservation = await quotas.reserve_again(want)
    if reservation is None:
        state = await quotas.month_state(want.tenant_id, want.month, want.default_quota)
        raise QuotaExceeded(
            "The organization's monthly AI token quota is used up."
            if state.used >= state.quota
            else "The organization's monthly AI token quota has too few tokens left for this "
            "completion; lower maxTokens or shorten the prompt.",
            quota=state.quota,
            used=state.used,
            reserved=state.reserved,
            requested=want.tokens,
            resetsAt=_next_month(_month_start()).isoformat(),
        )
    return reservation


def _next_month(start: dt.datetime) -> dt.datetime:
    return (start + dt.timedelta(days=32)).replace(day=1)


# Conversations ---------------------------------------------------------------------------


def _owned(principal: Principal) -> dict[str, Any]:
    if principal.api_key_id is not None:
        return {"owner_id": None, "api_key_id": principal.api_key_id}
    return {"owner_id": principal.user_id, "api_key_id": None}


def _conversations(principal: Principal) -> Any:
    return scoped(Conversation, principal.tenant_id).filter(**_owned(principal))


async def _own_conversation(principal: Principal, conversation_id: int) -> Conversation:
    conversation = await _conversations(principal).filter(id=conversation_id).first()
    if conversation is None:
        raise NotFound("Conversation not found.")
    return conversation


async def _history(principal: Principal, conversation: Conversation) -> list[dict[str, str]]:
    rows = (
        await scoped(ChatMessage, principal.tenant_id)
        .filter(conversation_id=conversation.id)
        .exclude(content="")
        .order_by("-id")
        .limit(HISTORY_MESSAGES)
    )
    return [{"role": r.role.value.lower(), "content": r.content} for r in reversed(rows)]


@dataclass
class _Plan:
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
    created: list[Any] = field(default_factory=list)  # rows to undo if the vendor refuses
    reservation: quotas.Reservation | None = None  # held in the quota until billed

    @property
    def vendor_user(self) -> str:
        """An opaque per-caller id for the vendor's abuse monitoring."""
        return hashlib.sha256(f"switchboard:{self.principal.key}".encode()).hexdigest()[:24]


async def _plan(
    ctx: Context, principal: Principal, request: ChatRequest, operation: str, title: str = ""
) -> _Plan:
    messages, model = _clean(ctx, request)
    conversation = None
    history: list[dict[str, str]] = []
    if request.conversation_id is not None:
        conversation = await _own_conversation(principal, request.conversation_id)
        history = await _history(principal, conversation)
    cred, source = await _credential(ctx)
    if not title:
        first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
        title = " ".join(first_user.split())[:80] or "Conversation"
    plan = _Plan(
        principal=principal,
        request_messages=messages,
        messages=history + messages,
        model=model,
        temperature=request.temperature,
        max_tokens=request.max_tokens,
        cred=cred,
        source=source,
        operation=operation,
        conversation=conversation,
        title=title,
    )
    # Last: from here on the caller must settle it (a bill, or `_release_unbilled`).
    plan.reservation = await _reserve(ctx, plan)
    return plan


async def _release_unbilled(plan: _Plan) -> None:
    """The completion ended without a bill (cancelled before the vendor answered, or
    the bill could not be written): give its reservation back."""
    if plan.reservation is not None and not plan.reservation.settled:
        try:
            await quotas.release_unbilled(plan.reservation)
        except Exception:
            # It expires (RESERVATION_SECONDS) and is swept when the quota looks full.
            log.exception(
                "could not release a reservation", extra={"tenant": plan.principal.tenant_id}
            )


async def _store_prompt(ctx: Context, plan: _Plan) -> tuple[Conversation, ChatMessage]:
    """The conversation (new or touched), the caller's messages and the answer's row, in
    one transaction, shared with the other prompts being stored at the same moment
    (a burst of streams starting at once commits a few times, not once each)."""
    writer = ctx.services.extras.get("ai_prompts")
    if writer is None or writer.loop is not asyncio.get_running_loop():
        writer = ctx.services.extras["ai_prompts"] = GroupCommit(_write_prompts)
    result: tuple[Conversation, ChatMessage] = await writer(plan)
    return result


async def _write_prompts(plans: list[_Plan]) -> list[tuple[Conversation, ChatMessage]]:
    written = []
    async with in_transaction() as conn:
        for plan in plans:
            written.append(await _write_prompt(plan, conn))
    # Only once committed: `_undo` removes what exists.
    for plan, (_, _, created) in zip(plans, written, strict=True):
        plan.created.extend(created)
    return [(conversation, answer) for conversation, answer, _ in written]


async def _write_prompt(plan: _Plan, conn: Any) -> tuple[Conversation, ChatMessage, list[Any]]:
    tenant_id = plan.principal.tenant_id
    created: list[Any] = []
    conversation = plan.conversation
    if conversation is None:
        conversation = await Conversation.create(
            tenant_id=tenant_id,
            title=plan.title,
            model=plan.model,
            using_db=conn,
            **_owned(plan.principal),
        )
        created.append(conversation)
    else:
        conversation.model = plan.model
        await conversation.save(update_fields=["model", "updated_at"], using_db=conn)
    for m in plan.request_messages:
        created.append(
            await ChatMessage.create(
                tenant_id=tenant_id,
                conversation_id=conversation.id,
                role=MessageRole(m["role"].upper()),
                content=m["content"],
                status=MessageStatus.COMPLETE,
                using_db=conn,
            )
        )
    answer = await ChatMessage.create(
        tenant_id=tenant_id,
        conversation_id=conversation.id,
        role=MessageRole.ASSISTANT,
        content="",
        status=MessageStatus.STREAMING,
        model=plan.model,
        using_db=conn,
    )
    created.append(answer)
    return conversation, answer, created


async def _undo(plan: _Plan, stored: asyncio.Task[Any]) -> None:
    """The vendor refused before answering: remove what this call stored."""
    with contextlib.suppress(Exception):
        await stored
    if plan.conversation is None:
        for row in plan.created:
            if isinstance(row, Conversation):
                await row.delete()  # cascades to its messages
                return
    for row in plan.created:
        if isinstance(row, ChatMessage):
            await row.delete()


async def _bill(
    ctx: Context,
    plan: _Plan,
    *,
    conversation_id: int | None,
    usage: Usage,
    outcome: UsageOutcome,
    latency: float,
    first_token: float | None,
    error_code: str | None = None,
    answer: ChatMessage | None = None,
) -> None:
    """One ledger row (and the answer's final state, in the same transaction)."""
    row = AiUsage(
        tenant_id=plan.principal.tenant_id,
        owner_id=plan.principal.user_id if plan.principal.api_key_id is None else None,
        api_key_id=plan.principal.api_key_id,
        conversation_id=conversation_id,
        operation=plan.operation,
        model=plan.model,
        credential_source=plan.source,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        estimated=usage.estimated,
        cost=usage.cost,
        latency_ms=int(latency * 1000),
        first_token_ms=None if first_token is None else int(first_token * 1000),
        outcome=outcome,
        error_code=error_code,
    )
    ledger = ctx.services.extras.get("ai_ledger")
    if ledger is None or ledger.loop is not asyncio.get_running_loop():
        ledger = ctx.services.extras["ai_ledger"] = GroupCommit(_write_bills)
    reservation = plan.reservation
    if reservation is not None and reservation.settled:
        reservation = None  # billed once already: this bill only adds to the ledger
    await ledger((answer, row, reservation))
    if reservation is not None:
        reservation.settled = True


_ANSWER_FIELDS = ["content", "status", "finish_reason", "updated_at"]


Bill = tuple[ChatMessage | None, AiUsage, quotas.Reservation | None]


async def _write_bills(bills: list[Bill]) -> list[None]:
    """Answers, their ledger rows and the quota they settle, in one transaction: one
    UPDATE statement for the answers and one INSERT for the ledger rows, each executed
    for all the rows at once (executemany: pipelined on PostgreSQL), however many there
    are, then one DELETE of the reservations and one UPDATE per tenant's month."""
    answers = [answer for answer, _, _ in bills if answer is not None]
    async with in_transaction() as conn:
        if len(answers) == 1:
            await answers[0].save(update_fields=_ANSWER_FIELDS, using_db=conn)
        elif answers:
            # The statement `save(update_fields=...)` runs, with every answer's values:
            # bulk_update's CASE per row and field costs ~1 ms of CPU per row to build.
            fields = ChatMessage._meta.fields_map
            pk = ChatMessage._meta.pk
            sql = conn.executor_class(model=ChatMessage, db=conn).get_update_sql(
                _ANSWER_FIELDS, None
            )
            await conn.execute_many(
                sql,
                [
                    [fields[f].to_db_value(getattr(a, f), a) for f in _ANSWER_FIELDS]
                    + [pk.to_db_value(a.pk, a)]
                    for a in answers
                ],
            )
        await AiUsage.bulk_create([row for _, row, _ in bills], using_db=conn)
        await quotas.settle(
            conn, [(held, row.total_tokens) for _, row, held in bills if held is not None]
        )
    return [None] * len(bills)


class GroupCommit(Generic[T, R]):
    """Writes of one kind made while a batch of them is being written go out together,
    as one batch, in one transaction (group commit): a burst of streams that start or
    end at once costs a few commits, not one each plus a queue for the pool's
    connections. A lone write goes at once. Up to `parallel` batches of at most `limit`
    writes are written at the same time (each on its own connection), so a big burst
    does not wait behind one long transaction. A failed batch is written again one
    write at a time, so one bad row fails alone. A caller that goes away does not take
    its write back (it is in a batch already)."""

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[list[R]]],
        limit: int = 50,
        parallel: int = 4,
    ) -> None:
        self.write = write
        self.limit = limit
        self.parallel = parallel
        self.queue: list[tuple[T, asyncio.Future[R]]] = []
        self.drains: set[asyncio.Future[None]] = set()
        self.loop = asyncio.get_running_loop()

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = self.loop.create_future()
        self.queue.append((item, future))
        if len(self.drains) < self.parallel:
            drain = asyncio.ensure_future(self._drain())
            self.drains.add(drain)
            drain.add_done_callback(self.drains.discard)
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue[: self.limit], self.queue[self.limit :]
                try:
                    results = await self.write([item for item, _ in batch])
                except Exception as error:
                    if len(batch) == 1:
                        _settle_future(batch[0][1], error=error)
                        continue
                    for item, future in batch:
                        try:
                            [result] = await self.write([item])
                        except Exception as one:
                            _settle_future(future, error=one)
                        else:
                            _settle_future(future, result)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    _settle_future(future, result)
        finally:
            # At once (not in the done callback, a loop turn later): a write queued from
            # now on must find a free drain slot.
            self.drains.discard(asyncio.current_task())  # type: ignore[arg-type]


def _settle_future(
    future: asyncio.Future[R], result: Any = None, *, error: Exception | None = None
) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _usage(
    ctx: Context,
    plan: _Plan,
    vendor: tuple[int, int] | None,
    received_chunks: int,
    opened: bool,
) -> Usage:
    if vendor is not None:
        prompt, completion = vendor
        estimated = False
    elif opened:
        prompt, completion = estimate_prompt_tokens(plan.messages), received_chunks
        estimated = True
    else:
        prompt, completion, estimated = 0, 0, False
    return Usage(
        prompt, completion, estimated, cost_of(ctx.services, plan.model, prompt, completion)
    )


# Plain completion --------------------------------------------------------------------------


@operation("ai:use")
async def create_chat_completion(ctx: Context, request: ChatRequest) -> CompletionResult:
    principal = ctx.require_principal()
    plan = await _plan(ctx, principal, request, "chat")
    return await _complete(ctx, plan)


async def _complete(ctx: Context, plan: _Plan) -> CompletionResult:
    try:
        return await _complete_reserved(ctx, plan)
    finally:
        await asyncio.shield(_release_unbilled(plan))


async def _complete_reserved(ctx: Context, plan: _Plan) -> CompletionResult:
    client = provider(ctx.services)
    started = time.perf_counter()
    stored = asyncio.create_task(_store_prompt(ctx, plan))
    try:
        result: Completion = await client.chat(
            plan.cred,
            messages=plan.messages,
            model=plan.model,
            temperature=plan.temperature,
            max_tokens=plan.max_tokens,
            user=plan.vendor_user,
        )
    except ProviderError as error:
        await asyncio.shield(_undo(plan, stored))
        usage = _usage(ctx, plan, None, 0, opened=False)
        await _bill(
            ctx, plan, conversation_id=None, usage=usage, outcome=UsageOutcome.FAILED,
            latency=time.perf_counter() - started, first_token=None,
            error_code=error.vendor_code,
        )  # fmt: skip
        raise gateway_error(error) from None
    except BaseException:
        await asyncio.shield(_undo(plan, stored))
        raise
    conversation, answer = await stored
    latency = time.perf_counter() - started
    vendor = (result.prompt_tokens, result.completion_tokens) if result.prompt_tokens else None
    usage = _usage(ctx, plan, vendor, estimate_tokens(result.text), opened=True)
    answer.content = result.text
    answer.status = MessageStatus.COMPLETE
    answer.finish_reason = result.finish_reason
    await _bill(
        ctx, plan, conversation_id=conversation.id, usage=usage,
        outcome=UsageOutcome.COMPLETE, latency=latency, first_token=latency, answer=answer,
    )  # fmt: skip
    return CompletionResult(conversation, answer, usage)


# Streamed completion -----------------------------------------------------------------------


class _Pump:
    """Drains the vendor stream into a buffer; the subscription takes what has piled up.

    The consumer is woken at most once per coalescing window (`next_at`, set by the
    consumer after each event it sends): the first delta goes out at once, later ones
    are gathered until the window has passed, and the end of the stream (or an error)
    wakes it at once, so the last event is never held back."""

    __slots__ = (
        "_timer",
        "done",
        "error",
        "finish",
        "loop",
        "next_at",
        "parts",
        "received",
        "usage",
        "wake",
    )

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.received = 0  # content chunks received (≈ tokens)
        self.finish: str | None = None
        self.usage: tuple[int, int] | None = None
        self.error: ProviderError | None = None
        self.done = False
        self.wake = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.next_at = 0.0  # loop time before which the consumer is not woken for text
        self._timer: asyncio.TimerHandle | None = None

    def _fire(self) -> None:
        self._timer = None
        self.wake.set()

    def _notify(self) -> None:
        if self.wake.is_set() or self._timer is not None:
            return
        if self.loop.time() >= self.next_at:
            self.wake.set()
        else:
            self._timer = self.loop.call_at(self.next_at, self._fire)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def run(self, chunks: AsyncIterator[StreamChunk]) -> None:
        parts = self.parts
        try:
            async for chunk in chunks:
                if chunk.delta:
                    parts.append(chunk.delta)
                    self.received += 1
                    self._notify()
                if chunk.finish_reason:
                    self.finish = chunk.finish_reason
                if chunk.usage is not None:
                    self.usage = chunk.usage
        except ProviderError as error:
            self.error = error
        finally:
            self.done = True
            self.cancel_timer()
            self.wake.set()


@operation("ai:use")
async def stream_chat_completion(ctx: Context, request: ChatRequest) -> AsyncIterator[StreamEvent]:
    """The answer as it arrives; the last event carries the finish reason and the usage."""
    principal = ctx.require_principal()
    plan = await _plan(ctx, principal, request, "chat_stream")
    try:
        # Closed here, at once, when the subscriber leaves: the vendor stream closes and
        # the part received is billed before the reservation could be released unbilled.
        async with contextlib.aclosing(_stream(ctx, plan)) as events:
            async for event in events:
                yield event
    finally:
        await asyncio.shield(_release_unbilled(plan))


async def _stream(ctx: Context, plan: _Plan) -> AsyncGenerator[StreamEvent, None]:
    client = provider(ctx.services)
    coalesce = ctx.settings.ai_stream_coalesce_ms / 1000
    started = time.perf_counter()
    first_token: float | None = None
    stream: ChatStream = client.stream_chat(
        plan.cred,
        messages=plan.messages,
        model=plan.model,
        temperature=plan.temperature,
        max_tokens=plan.max_tokens,
        user=plan.vendor_user,
    )
    try:
        chunks = await stream.__aenter__()
    except ProviderError as error:
        await _bill(
            ctx, plan, conversation_id=None, usage=_usage(ctx, plan, None, 0, opened=False),
            outcome=UsageOutcome.FAILED, latency=time.perf_counter() - started,
            first_token=None, error_code=error.vendor_code,
        )  # fmt: skip
        raise gateway_error(error) from None
    # Stored once the vendor took the request (its answer's headers are in), while the
    # first token is on its way: in a burst of streams starting at once, the upstream
    # requests leave before the store's work, and a refusal leaves nothing to undo.
    stored = asyncio.create_task(_store_prompt(ctx, plan))
    pump = _Pump()
    reader = asyncio.create_task(pump.run(chunks))
    budget = ctx.settings.ai_stream_max_events_per_second
    live: list[int] = ctx.services.extras.setdefault("ai_live_streams", [0])
    live[0] += 1
    received: list[str] = []
    outcome = UsageOutcome.INTERRUPTED
    settled = False
    conversation: Conversation | None = None
    answer: ChatMessage | None = None
    try:
        conversation, answer = await stored
        index = 0
        while True:
            await pump.wake.wait()
            pump.wake.clear()
            text = ""
            if pump.parts:
                text = "".join(pump.parts)
                pump.parts.clear()
                received.append(text)
                if first_token is None:
                    first_token = time.perf_counter() - started
            if text and (not pump.done or pump.error is not None):
                # Text arriving within the window waits for the next event (not the end).
                window = max(coalesce, live[0] / budget) if budget else coalesce
                pump.next_at = pump.loop.time() + window
                yield StreamEvent(text, index, conversation.id, answer.id)
                index += 1
                text = ""
            if not pump.done:
                continue
            if pump.error is not None:
                outcome = UsageOutcome.FAILED
                raise gateway_error(pump.error)
            outcome = UsageOutcome.COMPLETE
            usage = await _settle(
                ctx, plan, pump, received, conversation, answer, outcome, started, first_token
            )
            settled = True
            # The last event: any text still buffered, the finish reason and the bill.
            yield StreamEvent(
                text, index, conversation.id, answer.id, finish_reason=pump.finish, usage=usage
            )
            return
    finally:
        live[0] -= 1
        pump.cancel_timer()
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        # Closing the vendor stream first: the vendor stops generating at once.
        with contextlib.suppress(BaseException):
            await stream.__aexit__(None, None, None)
        if not settled:
            if answer is None:
                with contextlib.suppress(BaseException):
                    conversation, answer = await asyncio.shield(stored)
            if conversation is not None and answer is not None:
                await asyncio.shield(
                    _settle(
                        ctx, plan, pump, received, conversation, answer, outcome, started,
                        first_token,
                    )
                )  # fmt: skip


async def _settle(
    ctx: Context,
    plan: _Plan,
    pump: _Pump,
    received: list[str],
    conversation: Conversation,
    answer: ChatMessage,
    outcome: UsageOutcome,
    started: float,
    first_token: float | None,
) -> Usage:
    """Save the answer (whole, or the part received) and bill what was received."""
    usage = _usage(ctx, plan, pump.usage, pump.received, opened=True)
    answer.content = "".join(received)
    answer.status = {
        UsageOutcome.COMPLETE: MessageStatus.COMPLETE,
        UsageOutcome.INTERRUPTED: MessageStatus.INTERRUPTED,
        UsageOutcome.FAILED: MessageStatus.FAILED,
    }[outcome]
    answer.finish_reason = pump.finish
    try:
        await _bill(
            ctx, plan, conversation_id=conversation.id, usage=usage, outcome=outcome,
            latency=time.perf_counter() - started, first_token=first_token,
            error_code=pump.error.vendor_code if pump.error else None, answer=answer,
        )  # fmt: skip
    except Exception:
        log.exception("could not save a completion", extra={"tenant": plan.principal.tenant_id})
        raise
    return usage


# Models ------------------------------------------------------------------------------------


@operation("ai:use")
async def ai_models(ctx: Context) -> list[ModelOption]:
    """The models the caller's credential can use, with their prices."""
    cred, _ = await _credential(ctx)
    cache: dict[tuple[str, str | None, str | None], tuple[float, list[ModelInfo]]]
    cache = ctx.services.extras.setdefault("openai_models", {})
    key = (cred.fingerprint, cred.organization, cred.base_url)
    hit = cache.get(key)
    if hit is not None and hit[0] > time.monotonic():
        models = hit[1]
    else:
        try:
            models = await provider(ctx.services).list_models(cred)
        except ProviderError as error:
            raise gateway_error(error) from None
        cache[key] = (time.monotonic() + MODELS_CACHE_SECONDS, models)
    options = []
    for m in sorted(models, key=lambda m: m.id):
        price_in, price_out = prices(ctx.services, m.id)
        options.append(ModelOption(m.id, m.owned_by, price_in, price_out))
    return options


# Conversations (reads) ---------------------------------------------------------------------


@operation("ai:use")
async def list_conversations(ctx: Context, *, first: int | None, after: str | None) -> Page:
    principal = ctx.require_principal()
    return await page_of(ctx, _conversations(principal), first=first, after=after)


@operation("ai:use")
async def get_conversation(ctx: Context, conversation_id: int) -> Conversation:
    principal = ctx.require_principal()
    return await _own_conversation(principal, conversation_id)


async def conversations_by_ids(ctx: Context, ids: list[int]) -> list[Conversation | None]:
    """Node lookups: only the caller's own conversations are found."""
    principal = ctx.require("ai:use")
    rows = {c.id: c for c in await _conversations(principal).filter(id__in=ids)}
    return [rows.get(i) for i in ids]


async def messages_by_ids(ctx: Context, ids: list[int]) -> list[ChatMessage | None]:
    principal = ctx.require("ai:use")
    own = _conversations(principal).values_list("id", flat=True)
    rows = {
        m.id: m
        for m in await scoped(ChatMessage, principal.tenant_id).filter(
            id__in=ids, conversation_id__in=Subquery(own)
        )
    }
    return [rows.get(i) for i in ids]


async def list_messages(
    ctx: Context, conversation: Conversation, *, first: int | None, after: str | None
) -> Page:
    principal = ctx.require("ai:use")
    if conversation.tenant_id != principal.tenant_id:
        raise NotFound("Conversation not found.")
    return await page_of(
        ctx,
        scoped(ChatMessage, principal.tenant_id).filter(conversation_id=conversation.id),
        first=first,
        after=after,
        order=Order("id"),
    )


# Usage report ------------------------------------------------------------------------------

MAX_REPORT_DAYS = 366


@operation("ai:usage")
async def ai_usage(ctx: Context, start: dt.date, end: dt.date) -> UsageReport:
    """Tokens and cost from `start` to `end` (whole UTC days, both included)."""
    principal = ctx.require_principal()
    if end < start:
        raise BadUserInput("`to` is before `from`.", details={"to": "must not be before from"})
    if (end - start).days >= MAX_REPORT_DAYS:
        raise BadUserInput(
            "The period is too long.", details={"to": f"at most {MAX_REPORT_DAYS} days after from"}
        )
    lo = dt.datetime.combine(start, dt.time.min, tzinfo=dt.UTC)
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    base = scoped(AiUsage, principal.tenant_id).filter(created_at__gte=lo, created_at__lt=hi)

    async def grouped(column: str) -> list[UsageGroup]:
        rows = (
            await base.annotate(
                calls=Count("id"),
                prompt=Sum("prompt_tokens"),
                completion=Sum("completion_tokens"),
                spent=Sum("cost"),
            )
            .group_by(column)
            .values(column, "calls", "prompt", "completion", "spent")
        )
        groups = [
            UsageGroup(
                key="" if row[column] is None else str(row[column]),
                calls=int(row["calls"] or 0),
                prompt_tokens=int(row["prompt"] or 0),
                completion_tokens=int(row["completion"] or 0),
                cost=Decimal(str(row["spent"] or 0)).quantize(CENTS8),
            )
            for row in rows
        ]
        return sorted(groups, key=lambda g: (-g.total_tokens, g.key))

    by_model = await grouped("model")
    by_owner = await grouped("owner_id")
    users = {
        u.id: u for u in await User.filter(id__in=[int(g.key) for g in by_owner if g.key.isdigit()])
    }
    total = UsageGroup(
        key="",
        calls=sum(g.calls for g in by_model),
        prompt_tokens=sum(g.prompt_tokens for g in by_model),
        completion_tokens=sum(g.completion_tokens for g in by_model),
        cost=sum((g.cost for g in by_model), Decimal(0)),
    )
    return UsageReport(
        start=start,
        end=end,
        total=total,
        by_model=by_model,
        by_user=[(users.get(int(g.key)) if g.key.isdigit() else None, g) for g in by_owner],
    )


@operation("ai:use")
async def ai_quota(ctx: Context) -> tuple[int, int]:
    """(tokens used this month, monthly quota) for the caller's organization."""
    principal = ctx.require_principal()
    return await quota_state(principal.tenant_id, ctx.settings.ai_monthly_token_quota)


# Task summary ------------------------------------------------------------------------------

SUMMARY_SYSTEM_PROMPT = (
    "You are a CRM assistant. Summarise the user's tasks for the day in a few short "
    "sentences: what is due, what is overdue or open, what is done, and what to do first."
)
MAX_SUMMARY_TASKS = 200


@operation("ai:use")
async def generate_task_summary(
    ctx: Context, day: dt.date, model: str | None = None
) -> CompletionResult:
    """A summary of the caller's CRM tasks due on `day` (a UTC day), through the AI path."""
    principal = ctx.require_principal()
    if principal.user_id is None or principal.api_key_id is not None:
        raise Forbidden("Task summaries are for signed-in members (API keys own no tasks).")
    lo = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
    hi = lo + dt.timedelta(days=1)
    tasks = (
        await scoped(Task, principal.tenant_id)
        .filter(assignee_id=principal.user_id, due_at__gte=lo, due_at__lt=hi)
        .exclude(status=TaskStatus.CANCELLED)
        .order_by("due_at", "id")
        .limit(MAX_SUMMARY_TASKS)
    )
    lines = [f"Tasks due on {day.isoformat()} ({len(tasks)}):"]
    for task in tasks:
        due = task.due_at.strftime("%H:%M") if task.due_at else "--:--"
        line = f"- [{task.status.value}] {due} {task.title.strip()}"
        if task.description.strip():
            line += f" — {' '.join(task.description.split())[:300]}"
        lines.append(line)
    if not tasks:
        lines.append("- (no tasks)")
    request = ChatRequest(
        messages=[
            MessageIn("SYSTEM", SUMMARY_SYSTEM_PROMPT),
            MessageIn("USER", "\n".join(lines)),
        ],
        model=model,
        max_tokens=min(400, ctx.settings.ai_max_output_tokens),
    )
    plan = await _plan(
        ctx, principal, request, "task_summary", title=f"Tasks for {day.isoformat()}"
    )
    return await _complete(ctx, plan)
