"""Streamed completions.

The prompt's rows are named by the gateway (`prompts.assign_ids`) and stored once the
first event is out, so that in a burst of streams the upstream requests and the first
events go before the store's work, and a refusal stores nothing. Reads of those rows in
this process wait for the write (`PendingPrompts`); a write that fails ends the stream
with an error, and only the part received is billed.

Streams coalesce: a reader task drains the vendor's SSE chunks into a buffer and the
subscription yields whatever has accumulated each time the consumer is ready, at most one
event per window after the first delta (which goes out at once, as does the last event
with the finish reason and usage), so a busy process sends fewer, larger events instead
of falling behind. The window is `AI_STREAM_COALESCE_MS`, widened when many streams share
the process so that all of them together send about `AI_STREAM_MAX_EVENTS_PER_SECOND`
events: each event costs a GraphQL execution and a WebSocket frame whatever its size
(`bench/bench_ai_stream.py` measures it; figures in bench/README.md). When the subscriber
completes, disconnects or is cancelled, the vendor stream is closed at once and the
answer so far is saved as INTERRUPTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from kit.errors import GatewayError
from models.ai import ChatMessage, Conversation, MessageStatus, UsageOutcome
from providers.errors import ProviderError
from providers.openai import ChatStream, StreamChunk
from resolvers.ai.ledger import bill, usage_of
from resolvers.ai.plan import make_plan
from resolvers.ai.prompts import assign_ids, start_storing
from resolvers.ai.quota import release_unbilled
from resolvers.ai.state import ai_state
from resolvers.ai.types import ChatRequest, Plan, StreamEvent, Usage
from resolvers.ai.vendor import gateway_error, provider
from resolvers.context import Context
from resolvers.operations import operation

log = logging.getLogger("switchboard.ai")


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
    plan = await make_plan(ctx, principal, request, "chat_stream")
    try:
        # Closed here, at once, when the subscriber leaves: the vendor stream closes and
        # the part received is billed before the reservation could be released unbilled.
        async with contextlib.aclosing(_stream(ctx, plan)) as events:
            async for event in events:
                yield event
    finally:
        await asyncio.shield(release_unbilled(plan))


async def stream_plan(ctx: Context, plan: Plan) -> AsyncIterator[StreamEvent]:
    """Stream a completion already planned by another area (the inbox's draft replies),
    settled as `stream_chat_completion` settles its own."""
    try:
        async with contextlib.aclosing(_stream(ctx, plan)) as events:
            async for event in events:
                yield event
    finally:
        await asyncio.shield(release_unbilled(plan))


async def _stream(ctx: Context, plan: Plan) -> AsyncGenerator[StreamEvent, None]:
    client = provider(ctx.services)
    coalesce = ctx.settings.ai_stream_coalesce_ms / 1000
    started = time.perf_counter()
    first_token: float | None = None
    # The rows' ids are the gateway's, taken while the request goes out (from the
    # process's stock, or a block of them from the store if it ran short): the first
    # event names them while the rows are written.
    naming = asyncio.ensure_future(assign_ids(ctx, plan))
    naming.add_done_callback(lambda done: done.cancelled() or done.exception())
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
        await bill(
            ctx, plan, conversation_id=None, usage=usage_of(ctx, plan, None, 0, opened=False),
            outcome=UsageOutcome.FAILED, latency=time.perf_counter() - started,
            first_token=None, error_code=error.vendor_code,
        )  # fmt: skip
        raise gateway_error(error) from None
    try:
        await naming
    except BaseException as error:
        with contextlib.suppress(BaseException):
            await stream.__aexit__(None, None, None)
        if isinstance(error, Exception):
            await _bill_unstored(ctx, plan, None, started, None, error)
            raise _not_stored() from None
        raise
    conversation_id, answer_id = plan.conversation_id, plan.answer_id
    assert conversation_id is not None and answer_id is not None
    pump = _Pump()
    # The rows are written once the first event is out (or the stream ends without one):
    # their ids are the gateway's, so nothing waits for them, and in a burst of streams
    # the first events go before the store's work; a refusal leaves nothing to undo. The
    # write is registered now, before any event names its ids, so that a read of them in
    # this process waits for it.
    first_out = asyncio.Event()
    stored = start_storing(ctx, plan, after=first_out)
    # A failed write ends the stream at once, whatever the vendor is sending.
    stored.add_done_callback(lambda done: None if _failed(done) is None else pump.wake.set())

    def store() -> asyncio.Task[tuple[Conversation, ChatMessage]]:
        first_out.set()
        return stored

    reader = asyncio.create_task(pump.run(chunks))
    budget = ctx.settings.ai_stream_max_events_per_second
    state = ai_state(ctx.services)
    state.live_streams += 1
    received: list[str] = []
    outcome = UsageOutcome.INTERRUPTED
    settled = False
    try:
        index = 0
        while True:
            await pump.wake.wait()
            pump.wake.clear()
            if stored.done() and _failed(stored) is not None:
                outcome = UsageOutcome.FAILED
                raise _not_stored()
            text = ""
            if pump.parts:
                text = "".join(pump.parts)
                pump.parts.clear()
                received.append(text)
                if first_token is None:
                    first_token = time.perf_counter() - started
            if text and (not pump.done or pump.error is not None):
                # Text arriving within the window waits for the next event (not the end).
                window = max(coalesce, state.live_streams / budget) if budget else coalesce
                pump.next_at = pump.loop.time() + window
                yield StreamEvent(text, index, conversation_id, answer_id)
                index += 1
                text = ""
                store()
            if not pump.done:
                continue
            if pump.error is not None:
                outcome = UsageOutcome.FAILED
                raise gateway_error(pump.error)
            written = store()
            if not written.done():
                # The whole answer came before its rows were written: they must be, first.
                await asyncio.wait([written])
            if _failed(written) is not None:
                outcome = UsageOutcome.FAILED
                raise _not_stored()
            conversation, answer = written.result()
            outcome = UsageOutcome.COMPLETE
            usage = await _settle(
                ctx, plan, pump, received, conversation, answer, outcome, started, first_token
            )
            settled = True
            # The last event: any text still buffered, the finish reason and the bill.
            yield StreamEvent(
                text, index, conversation_id, answer_id, finish_reason=pump.finish, usage=usage,
                citations=plan.citations if plan.citations else None,
            )  # fmt: skip
            return
    finally:
        state.live_streams -= 1
        pump.cancel_timer()
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        # Closing the vendor stream first: the vendor stops generating at once.
        with contextlib.suppress(BaseException):
            await stream.__aexit__(None, None, None)
        if not settled:
            written = store()
            with contextlib.suppress(BaseException):
                await asyncio.shield(asyncio.wait([written]))
            if written.done() and _failed(written) is None:
                conversation, answer = written.result()
                await asyncio.shield(
                    _settle(
                        ctx, plan, pump, received, conversation, answer, outcome, started,
                        first_token,
                    )
                )  # fmt: skip
            elif written.done():
                # Nothing was written (one transaction): only the tokens received are
                # billed, once, with no conversation; the caller releases the rest of the
                # reservation if even this bill cannot be written.
                await asyncio.shield(
                    _bill_unstored(ctx, plan, pump, started, first_token, _failed(written))
                )


def _not_stored() -> GatewayError:
    return GatewayError(
        "The conversation could not be stored, so the answer was stopped; only the part "
        "received is billed."
    )


def _failed(stored: asyncio.Task[Any]) -> BaseException | None:
    """The error of a finished prompt write (a cancelled one failed too)."""
    if stored.cancelled():
        return asyncio.CancelledError()
    return stored.exception()


async def _bill_unstored(
    ctx: Context,
    plan: Plan,
    pump: _Pump | None,
    started: float,
    first_token: float | None,
    error: BaseException | None,
) -> None:
    log.error(
        "the prompt of a stream could not be stored; the stream was stopped",
        exc_info=error,
        extra={"tenant": plan.principal.tenant_id},
    )
    try:
        await bill(
            ctx, plan, conversation_id=None,
            usage=usage_of(
                ctx,
                plan,
                None if pump is None else pump.usage,
                0 if pump is None else pump.received,
                opened=True,
            ),
            outcome=UsageOutcome.FAILED, latency=time.perf_counter() - started,
            first_token=first_token, error_code="store_failed",
        )  # fmt: skip
    except Exception:
        log.exception("could not bill a stream", extra={"tenant": plan.principal.tenant_id})


async def _settle(
    ctx: Context,
    plan: Plan,
    pump: _Pump,
    received: list[str],
    conversation: Conversation,
    answer: ChatMessage,
    outcome: UsageOutcome,
    started: float,
    first_token: float | None,
) -> Usage:
    """Save the answer (whole, or the part received) and bill what was received."""
    usage = usage_of(ctx, plan, pump.usage, pump.received, opened=True)
    answer.content = "".join(received)
    answer.status = {
        UsageOutcome.COMPLETE: MessageStatus.COMPLETE,
        UsageOutcome.INTERRUPTED: MessageStatus.INTERRUPTED,
        UsageOutcome.FAILED: MessageStatus.FAILED,
    }[outcome]
    answer.finish_reason = pump.finish
    try:
        await bill(
            ctx, plan, conversation_id=conversation.id, usage=usage, outcome=outcome,
            latency=time.perf_counter() - started, first_token=first_token,
            error_code=pump.error.vendor_code if pump.error else None, answer=answer,
        )  # fmt: skip
    except Exception:
        log.exception("could not save a completion", extra={"tenant": plan.principal.tenant_id})
        raise
    return usage
