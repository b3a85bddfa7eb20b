"""OpenAI chat completions on the official `openai` SDK, behind the shared outbound layer.

The SDK speaks the vendor's API (paths, SSE parsing, error bodies); the shared layer
(`providers.http.ProviderHTTP` for this provider) supplies what every provider gets:
the provider and per-credential circuit breakers, the outbound rate limit per
credential, retries with jittered backoff that honour `Retry-After`, metrics, the
health statistics and the failure hooks. So the SDK runs with `max_retries=0`.

- One `AsyncOpenAI` per credential (key, organisation, base URL), cached, bounded.
- A base URL a tenant or user set (`OpenAICredential.guarded`) is dialled only through
  the outbound guard (`kit.ssrf`): the SDK gets the URL as the guard normalised it,
  an aiohttp transport whose session checks and pins every address, and no redirects
  (the SDK follows them by default). A refused address raises `UnsafeDestination`.
- A tenant's or user's own credential (`OpenAICredential.own`) trips its own breaker
  only, never the provider's, which the system key and the sandbox share.
- Limits per key: `max_concurrent` requests in flight (a stream holds its slot until
  it is closed) and the requests-per-minute budget of the shared limiter. Over them,
  a call waits briefly and then fails with a retryable `RateLimitedLocally` /
  `ProviderError(vendor_code="local_concurrency")`.
- Every SDK failure becomes a `ProviderError` with the HTTP status and the vendor's
  `error.code`; its message is scrubbed of anything shaped like a key (OpenAI echoes a
  masked key in its 401 message; we pass none of it on).
- `stream_chat()` is an async context manager: leaving it (completion, error, the
  subscriber going away, cancellation) closes the HTTP response at once, so the
  vendor sees the disconnect and stops generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2  # the SDK's HTTP client: its response streams raise these
import openai
from openai import AsyncOpenAI
from openai._constants import RAW_RESPONSE_HEADER
from openai._vendor.httpx_aiohttp.transport import AiohttpTransport

from kit.ssrf import check_url, guarded_session
from providers.call import Call
from providers.errors import ProviderError
from providers.http import ProviderConfig, ProviderHTTP, fingerprint
from providers.retry import RETRYABLE_STATUSES, parse_retry_after

PROVIDER = "openai"
# The shared layer's defaults; the requests-per-minute budget per key comes from settings
# (`resolvers.ai.vendor.provider`), the timeouts from the SDK client.
CONFIG = ProviderConfig(name=PROVIDER)
# `client.post` options for a stream: the SDK's bearer auth, and the response handed
# back unread (the header the SDK's own `with_streaming_response` sets).
_STREAM_RAW: Any = {"headers": {RAW_RESPONSE_HEADER: "stream"}, "security": {"bearer_auth": True}}
_KEYISH = re.compile(r"\b(sk|sess|org|proj)-[A-Za-z0-9*_\-]{4,}")
MAX_MESSAGE = 300
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OpenAICredential:
    """What the SDK needs to call as one key. `repr` never shows the key."""

    api_key: str = field(repr=False)
    organization: str | None = None
    base_url: str | None = None
    own: bool = False  # a tenant's or user's own key: its failures trip its breaker only
    guarded: bool = False  # base_url was set by a tenant or user: dial it through the guard

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.api_key)

    @classmethod
    def of(
        cls, secrets: Mapping[str, str], base_url: str | None, *, own: bool, guarded: bool
    ) -> OpenAICredential:
        """From a stored or configured credential's fields (`api_key`, `organization`,
        `base_url`), as the credential chain resolved them."""
        return cls(
            api_key=secrets.get("api_key", ""),
            organization=secrets.get("organization") or None,
            base_url=base_url or secrets.get("base_url") or None,
            own=own,
            guarded=guarded,
        )


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    owned_by: str


@dataclass(slots=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int
    model: str


@dataclass(slots=True)
class StreamChunk:
    """One SSE chunk reduced to what the gateway uses."""

    delta: str = ""
    finish_reason: str | None = None
    # (prompt_tokens, completion_tokens) from the vendor's final usage chunk
    usage: tuple[int, int] | None = None


def scrub(text: str) -> str:
    """Remove anything that looks like a key (even a masked one) from a vendor message."""
    return _KEYISH.sub("[redacted]", text)[:MAX_MESSAGE]


class OpenAIProvider:
    """Chat completions and model lists for any number of credentials, one per call."""

    def __init__(
        self,
        http: ProviderHTTP,
        *,
        max_concurrent: int = 50,
        queue_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_clients: int = 256,
    ) -> None:
        self.http = http
        self.name = http.name
        self.max_concurrent = max_concurrent
        self.queue_timeout = queue_timeout
        self._timeout = openai.Timeout(read_timeout, connect=connect_timeout)
        self._clients: OrderedDict[tuple[str, str | None, str | None, bool], AsyncOpenAI] = (
            OrderedDict()
        )
        self._max_clients = max_clients
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: dict[AsyncOpenAI, int] = {}  # calls in flight per client
        self._retired: set[AsyncOpenAI] = set()  # dropped from the cache, still in use
        self._closing: set[asyncio.Task[None]] = set()

    # Clients ----------------------------------------------------------------------

    def client(self, cred: OpenAICredential) -> AsyncOpenAI:
        """The cached SDK client for this credential (key, organisation, base URL)."""
        key = (cred.fingerprint, cred.organization, cred.base_url, cred.guarded)
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        base_url = cred.base_url or None
        if cred.guarded and base_url:
            base_url = check_url(base_url, self.http.policy).url
            policy = self.http.policy
            # The SDK's aiohttp transport over a guarded session (made on first use,
            # inside the loop); the SDK's own redirect following is off.
            http_client = openai.DefaultAioHttpClient(
                timeout=self._timeout,
                follow_redirects=False,
                transport=AiohttpTransport(client=lambda: guarded_session(policy, timeout=None)),
            )
        else:
            # The SDK's aiohttp transport: aiohttp's C HTTP parser reads a stream's many
            # small chunks for a fraction of the default transport's per-chunk cost.
            http_client = openai.DefaultAioHttpClient(timeout=self._timeout)
        client = AsyncOpenAI(
            api_key=cred.api_key,
            organization=cred.organization or None,
            base_url=base_url,
            max_retries=0,  # retries, breaker and limits come from the shared layer
            timeout=self._timeout,
            http_client=http_client,
        )
        self._clients[key] = client
        while len(self._clients) > self._max_clients:
            # The least recently used client leaves the cache; it is closed once no call
            # (a stream may still be reading) uses it any more.
            _, dropped = self._clients.popitem(last=False)
            if self._users.get(dropped):
                self._retired.add(dropped)
            else:
                self._close_later(dropped)
        return client

    def _acquire(self, cred: OpenAICredential) -> AsyncOpenAI:
        client = self.client(cred)
        self._users[client] = self._users.get(client, 0) + 1
        return client

    def _release(self, client: AsyncOpenAI) -> None:
        left = self._users.get(client, 1) - 1
        if left > 0:
            self._users[client] = left
            return
        self._users.pop(client, None)
        if client in self._retired:
            self._retired.discard(client)
            self._close_later(client)

    def _close_later(self, client: AsyncOpenAI) -> None:
        task = asyncio.get_running_loop().create_task(client.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        clients = [*self._clients.values(), *self._retired]
        self._clients.clear()
        self._retired.clear()
        for client in clients:
            await client.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # Calls ------------------------------------------------------------------------

    async def list_models(self, cred: OpenAICredential) -> list[ModelInfo]:
        async def call() -> list[ModelInfo]:
            client = self._acquire(cred)
            try:
                page = await client.models.list()
            finally:
                self._release(client)
            return [ModelInfo(m.id, m.owned_by) for m in page.data]

        return await self._guarded(cred, "models.list", call, idempotent=True)

    async def chat(
        self,
        cred: OpenAICredential,
        *,
        messages: Sequence[dict[str, str]],
        model: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        user: str | None = None,
    ) -> Completion:
        async def call() -> Completion:
            client = self._acquire(cred)
            try:
                result = await client.chat.completions.create(
                    **_chat_args(messages, model, temperature, max_tokens, user)
                )
            finally:
                self._release(client)
            choice = result.choices[0] if result.choices else None
            usage = result.usage
            return Completion(
                text=(choice.message.content or "") if choice else "",
                finish_reason=choice.finish_reason if choice else None,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                model=result.model or model,
            )

        return await self._guarded(cred, "chat.completions", call, idempotent=False)

    async def embed(
        self,
        cred: OpenAICredential,
        texts: Sequence[str],
        *,
        model: str,
        dimensions: int | None = None,
    ) -> Embeddings:
        """One vector per text (in order), from the embeddings API. No effect at the
        vendor, so it is retried like a read."""

        async def call() -> Embeddings:
            client = self._acquire(cred)
            try:
                args: dict[str, Any] = {"model": model, "input": list(texts)}
                if dimensions is not None:
                    args["dimensions"] = dimensions
                result = await client.embeddings.create(**args, encoding_format="float")
            finally:
                self._release(client)
            ordered = sorted(result.data, key=lambda d: d.index)
            usage = result.usage
            return Embeddings(
                vectors=[list(d.embedding) for d in ordered],
                prompt_tokens=usage.prompt_tokens if usage else 0,
                model=result.model or model,
            )

        return await self._guarded(cred, "embeddings", call, idempotent=True)

    def stream_chat(
        self,
        cred: OpenAICredential,
        *,
        messages: Sequence[dict[str, str]],
        model: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        user: str | None = None,
    ) -> ChatStream:
        """`async with provider.stream_chat(...) as chunks: async for chunk in chunks: ...`"""
        return ChatStream(self, cred, _chat_args(messages, model, temperature, max_tokens, user))

    # The shared layer around an SDK call ----------------------------------------

    def _slot(self, cred: OpenAICredential) -> asyncio.Semaphore:
        slot = self._slots.get(cred.fingerprint)
        if slot is None:
            slot = self._slots[cred.fingerprint] = asyncio.Semaphore(self.max_concurrent)
        return slot

    def guard(self, cred: OpenAICredential, operation: str, *, idempotent: bool) -> Call:
        """The shared layer around one call as this key: its rate budget, breakers and
        `max_concurrent` slots, retries, metrics and failure hooks. A guarded base URL
        is checked first: a refused one (UnsafeDestination) costs no budget or slot."""
        if cred.guarded and cred.base_url:
            check_url(cred.base_url, self.http.policy)
        return self.http.guard(
            operation,
            credential=cred.api_key,
            idempotent=idempotent,
            classify=to_provider_error,
            slot=self._slot(cred),
            queue_timeout=self.queue_timeout,
            own_credential=cred.own,
        )

    async def _guarded(
        self,
        cred: OpenAICredential,
        operation: str,
        call: Callable[[], Awaitable[T]],
        *,
        idempotent: bool,
    ) -> T:
        return await self.guard(cred, operation, idempotent=idempotent).run(call)


async def verify_key(provider: OpenAIProvider, cred: OpenAICredential) -> None:
    """OpenAI's cheap authenticated call: list the models the key can use. Raises
    ProviderError when the key was not accepted (or the vendor could not be asked)."""
    await provider.list_models(cred)


class ChatStream:
    """One streamed completion. Holds its concurrency slot until closed."""

    def __init__(self, provider: OpenAIProvider, cred: OpenAICredential, args: dict) -> None:
        self.provider = provider
        self.cred = cred
        self.args = {**args, "stream": True, "stream_options": {"include_usage": True}}
        self._stream: Any = None
        self._client: AsyncOpenAI | None = None
        self._guard: Call | None = None
        self.operation = "chat.completions.stream"

    async def __aenter__(self) -> AsyncIterator[StreamChunk]:
        provider = self.provider
        guard = provider.guard(self.cred, self.operation, idempotent=False)
        await guard.__aenter__()

        async def open_stream() -> Any:
            # The SDK's generic `post` with the body as built (`_chat_args`: plain JSON
            # types), not `chat.completions.create`, whose per-call TypedDict transform of
            # the arguments cost ~0.3 ms of CPU each, in the burst of a stream's start.
            # The SDK still sends the request (auth, organisation, headers, timeouts) and
            # raises its errors; `_STREAM_RAW` has it hand back the unread HTTP response,
            # whose SSE lines are parsed here, without a pydantic model per chunk.
            client = provider._acquire(self.cred)
            try:
                stream = await client.post(
                    "/chat/completions",
                    body=self.args,
                    cast_to=httpx2.Response,
                    options=_STREAM_RAW,
                    stream=True,
                    stream_cls=openai.AsyncStream,
                )
            except BaseException:
                provider._release(client)
                raise
            self._client = client
            return stream

        try:
            self._stream = await guard.attempt(open_stream)
        except BaseException as exc:
            await guard.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._guard = guard
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[StreamChunk]:
        response = self._stream
        try:
            try:
                async for data in _sse_data(response.aiter_bytes()):
                    if data == b"[DONE]":
                        break
                    chunk = _parse_chunk(data, response.request)
                    if chunk is not None:
                        yield chunk
            except openai.APIError:
                raise
            except httpx2.TimeoutException as exc:
                raise openai.APITimeoutError(request=response.request) from exc
            except (httpx2.RequestError, OSError) as exc:
                raise openai.APIConnectionError(request=response.request) from exc
        except Exception as exc:
            if self._guard is None:
                raise to_provider_error(exc, self.operation) from None
            raise await self._guard.fail(exc) from None
        # After [DONE]: the rest of an HTTP/1.1 body (its last chunk marker) is read so
        # that the connection goes back to the pool, as the SDK's own stream does.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                async for _ in response.aiter_raw():
                    pass

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        stream, self._stream = self._stream, None
        guard, self._guard = self._guard, None
        client, self._client = self._client, None
        try:
            if stream is not None:
                # Closing mid-stream drops the connection: the vendor sees the client leave.
                await stream.aclose()
        finally:
            if client is not None:
                self.provider._release(client)
            if guard is not None:
                # Completed, or the consumer left (cancellation): a success for the
                # breakers and metrics; a failure was recorded by `fail()` already.
                await guard.__aexit__(exc_type, exc, tb)


async def _sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The `data` of each Server-Sent Event in a byte stream (multi-line data joined with
    newlines, comments and other fields skipped), as the SDK's decoder reads them."""
    buffer = b""
    data: list[bytes] = []
    async for piece in chunks:
        buffer += piece
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                break
            line = buffer[:end]
            buffer = buffer[end + 1 :]
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield b"\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        yield b"\n".join(data)


def _parse_chunk(data: bytes, request: Any) -> StreamChunk | None:
    """One `chat.completion.chunk` event, or the vendor's in-stream error raised the way the
    SDK raises it (`openai.APIError` with the error body)."""
    try:
        event = json.loads(data)
    except ValueError:
        raise openai.APIError("invalid JSON in the event stream", request, body=None) from None
    if not isinstance(event, dict):
        return None
    error = event.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else None
        raise openai.APIError(
            message
            if isinstance(message, str) and message
            else "An error occurred during streaming",
            request,
            body=error,
        )
    raw_usage = event.get("usage")
    usage = None
    if isinstance(raw_usage, dict):
        usage = (
            int(raw_usage.get("prompt_tokens") or 0),
            int(raw_usage.get("completion_tokens") or 0),
        )
    choices = event.get("choices")
    if choices:
        choice = choices[0]
        delta = choice.get("delta") or {}
        return StreamChunk(
            delta=delta.get("content") or "", finish_reason=choice.get("finish_reason"), usage=usage
        )
    if usage is not None:
        return StreamChunk(usage=usage)
    return None


def _chat_args(
    messages: Sequence[dict[str, str]],
    model: str,
    temperature: float | None,
    max_tokens: int | None,
    user: str | None,
) -> dict[str, Any]:
    args: dict[str, Any] = {"model": model, "messages": list(messages)}
    if temperature is not None:
        args["temperature"] = temperature
    if max_tokens is not None:
        args["max_tokens"] = max_tokens
    if user:
        args["user"] = user  # an opaque id for the vendor's abuse monitoring, never an email
    return args


def to_provider_error(exc: BaseException, operation: str) -> ProviderError:
    """Any SDK failure as a ProviderError with the status and the vendor's error code."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(
            PROVIDER, operation, vendor_code="timeout", message="no answer within the timeout",
            retryable=True,
        )  # fmt: skip
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(
            PROVIDER, operation, vendor_code="connect_failed",
            message=f"could not reach the API: {type(exc.__cause__ or exc).__name__}",
            retryable=True,
        )  # fmt: skip
    if isinstance(exc, openai.APIError):
        body = exc.body if isinstance(exc.body, dict) else {}
        code = body.get("code") or body.get("type") or getattr(exc, "code", None)
        status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
        if status is None and code == "rate_limit_exceeded":
            status = 429  # reported inside the stream, after the 200 OK
        if status is None and body.get("type") == "server_error":
            status = 500
        headers = exc.response.headers if isinstance(exc, openai.APIStatusError) else {}
        retryable = status in RETRYABLE_STATUSES
        retry_after = parse_retry_after(headers, status) if retryable and headers else None
        if retryable and retry_after is None and status == 429:
            retry_after = _seconds_in_message(str(body.get("message") or ""))
        return ProviderError(
            PROVIDER,
            operation,
            status=status,
            vendor_code=str(code) if code else None,
            message=scrub(str(body.get("message") or exc.message or "")),
            retryable=retryable,
            retry_after=retry_after,
        )
    return ProviderError(
        PROVIDER, operation, vendor_code="client_error",
        message=f"unexpected {type(exc).__name__} from the client", retryable=False,
    )  # fmt: skip


_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?)(ms|s)")


def _seconds_in_message(message: str) -> float | None:
    match = _TRY_AGAIN.search(message)
    if not match:
        return None
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value
