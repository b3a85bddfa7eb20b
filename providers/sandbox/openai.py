"""OpenAI sandbox: an emulator of the parts of the OpenAI HTTP API the gateway uses.

Served at `/sandbox/openai` by the gateway (and standalone by tests and benchmarks),
it is what the official `openai` SDK talks to when a tenant has no key of its own:

- `POST /v1/chat/completions`, plain or `stream: true` (Server-Sent Events: one
  `data: {chunk}` line per token with `choices[].delta`, the `finish_reason` chunk,
  a usage chunk when `stream_options.include_usage` is set, then `data: [DONE]`);
- `GET /v1/models` and `GET /v1/models/{id}`;
- the vendor's error bodies `{"error": {"message", "type", "param", "code"}}`:
  `invalid_api_key` (401), `rate_limit_exceeded` (429 with `Retry-After`),
  `context_length_exceeded` (400), `model_not_found` (404).

Behaviour:

- **Keys**: any bearer key is accepted, except keys that contain `invalid` (those get
  the vendor's 401, with the key masked the way OpenAI masks it).
- **Paths** are served under `/v1` (the vendor's base URL ends in `/v1`) and at the
  root (the gateway's sandbox base URL `…/sandbox/openai` has no `/v1`).
- **Text** is deterministic: a generator seeded with the SHA-256 of the model and the
  messages, so the same prompt always streams the same words. One token = one word.
  Length: 24–64 tokens (drawn from the same seed), or the `answer_tokens` set through
  the control endpoint; capped by `max_tokens` / `max_completion_tokens` either way
  (`finish_reason` is then `length`). Token counts: prompt tokens are counted with the
  same word rule as `resolvers.ai.prices`' estimate (see `estimate_tokens`).
- **Token rate** (tokens per second, 0 = as fast as possible), first match wins: the
  `X-Sandbox-Tokens-Per-Second` request header, the `tokens_per_second` query
  parameter, the `tokens_per_second` value set through the control endpoint, the
  constructor default.
- **Faults on arrival** come from the sandbox framework (`POST /_sandbox/faults`, see
  `providers/sandbox/base.py`): `{"status": 429, "retry_after": 2}` answers with this
  vendor's error body for that status (`error_response`).
- **Stream faults, rate and length** (`/_sandbox/stream`: `POST` adds, `GET` lists,
  `DELETE` clears): `{"tokens_per_second": N}`, `{"answer_tokens": N}` (every answer
  N tokens long unless `max_tokens` is lower; `null` = back to 24–64) and/or a fault
  object (or `{"faults": [...]}`) with `kind` (`rate_limit`, `server_error`, `invalid_api_key`,
  `context_length_exceeded`), `after_chunks` (a streamed request fails after that many
  content chunks with an SSE `data: {"error": …}` line, which the SDK raises on; a
  plain request fails on arrival), `retry_after` (seconds), `times` (requests it hits,
  default 1; -1 = until cleared) and `prompt_contains` (only requests whose messages
  contain that text).
- **Recording** (`GET /_sandbox/requests`, from the framework; credentials masked):
  completions add `model`, `stream`, `chunks_sent`, `first_chunk_at`, `finished_at`,
  `error_code` and — when the client went away before the end — `disconnected_at`
  (wall clock, seconds).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from providers.sandbox import openai_embeddings as embeddings
from providers.sandbox.base import CONTROL_PREFIX, Sandbox, bearer

PROVIDER = "openai"

# Models the sandbox serves, with their context windows (tokens).
MODELS: dict[str, int] = {
    "gpt-4o-mini": 128_000,
    "gpt-4o": 128_000,
    "gpt-4.1-mini": 1_047_576,
    "gpt-3.5-turbo": 16_385,
}
CREATED = 1_715_367_049  # a fixed `created` timestamp for model objects

_WORDS = (
    "the a an and of to in on for with as at by from that this it is are was be can will "
    "plan task call email meeting lead contact invoice follow review team client project "
    "today tomorrow update note summary next step deal priority schedule draft send check "
    "report budget quarter target customer order payment ship confirm agenda notes idea "
    "quick clear simple short long early late open done ready waiting blocked important"
).split()

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Tokenizer-free estimate: words and punctuation marks, at least chars/4.

    The same rule `resolvers.ai.prices` documents for billing streams that end before the
    vendor's usage chunk arrives.
    """
    if not text:
        return 0
    return max(len(_TOKEN_RE.findall(text)), (len(text) + 3) // 4)


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _mask_key(key: str) -> str:
    return f"{key[:3]}{'*' * 12}{key[-4:]}" if len(key) > 8 else "sk-***"


@dataclass
class Fault:
    kind: str
    after_chunks: int | None = None
    retry_after: int = 1
    times: int = 1
    prompt_contains: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "after_chunks": self.after_chunks,
            "retry_after": self.retry_after,
            "times": self.times,
            "prompt_contains": self.prompt_contains,
        }


_FAULT_STATUS = {
    "rate_limit": 429,
    "invalid_api_key": 401,
    "context_length_exceeded": 400,
    "server_error": 500,
}
FAULT_KINDS = set(_FAULT_STATUS)


class OpenAISandbox(Sandbox):
    """The OpenAI emulator: vendor routes, stream faults and token rate."""

    provider = PROVIDER

    def __init__(self, *, tokens_per_second: float = 200.0) -> None:
        self.default_rate = tokens_per_second
        self.rate: float | None = None
        self.answer_tokens: int | None = None  # None: 24-64, drawn from the prompt's seed
        self.stream_faults: list[Fault] = []
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        api: list[BaseRoute] = []
        for prefix in ("/v1", ""):
            api += [
                Route(f"{prefix}/chat/completions", self.chat_completions, methods=["POST"]),
                Route(f"{prefix}/models", self.list_models, methods=["GET"]),
                Route(f"{prefix}/embeddings", self.embeddings, methods=["POST"]),
                Route(f"{prefix}/models/{{model:path}}", self.get_model, methods=["GET"]),
            ]
        return api

    def _control_routes(self) -> list[BaseRoute]:
        return [
            *super()._control_routes(),
            Route(
                f"{CONTROL_PREFIX}/stream", self.stream_control, methods=["GET", "POST", "DELETE"]
            ),
        ]

    def _record(self, scope: Any, path: str, body: bytes, fault: Any) -> dict[str, Any]:
        entry = super()._record(scope, path, body, fault)
        scope["sandbox.entry"] = entry  # the handlers add what they did to it
        return entry

    def reset_state(self) -> None:
        self.stream_faults.clear()
        self.rate = None
        self.answer_tokens = None

    def error_response(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """OpenAI's error body for `status` (used by the framework's faults too)."""
        defaults = {
            400: ("invalid_request_error", None, "Invalid request."),
            401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
            403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
            404: ("invalid_request_error", "model_not_found", "Not found."),
            429: (
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for requests per min (RPM). Please try again in 1s.",
            ),
        }
        type_, default_code, default_message = defaults.get(
            status,
            ("server_error", None, "The server had an error while processing your request."),
        )
        return JSONResponse(
            _error_body(message or default_message, type_, code or default_code),
            status_code=status,
            headers=headers,
        )

    # Control -----------------------------------------------------------------------

    def _stream_view(self, status: int = 200) -> JSONResponse:
        return JSONResponse(
            {
                "faults": [f.as_dict() for f in self.stream_faults],
                "tokens_per_second": self.rate if self.rate is not None else self.default_rate,
                "answer_tokens": self.answer_tokens,
            },
            status_code=status,
        )

    async def stream_control(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.reset_state()
            return self._stream_view()
        if request.method == "GET":
            return self._stream_view()
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        faults = []
        try:
            if "tokens_per_second" in body:
                rate = float(body["tokens_per_second"])
                if rate < 0:
                    raise ValueError("tokens_per_second must be >= 0")
            length = body.get("answer_tokens")
            if length is not None and (
                isinstance(length, bool) or not isinstance(length, int) or length < 1
            ):
                raise ValueError("answer_tokens must be a positive integer or null")
            specs = body.get("faults", [body] if "kind" in body else [])
            for spec in specs:
                if not isinstance(spec, dict) or spec.get("kind") not in FAULT_KINDS:
                    raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}")
                faults.append(
                    Fault(
                        kind=spec["kind"],
                        after_chunks=(
                            None if spec.get("after_chunks") is None else int(spec["after_chunks"])
                        ),
                        retry_after=int(spec.get("retry_after", 1)),
                        times=int(spec.get("times", 1)),
                        prompt_contains=spec.get("prompt_contains"),
                    )
                )
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if "tokens_per_second" in body:
            self.rate = rate
        if "answer_tokens" in body:
            self.answer_tokens = length
        self.stream_faults.extend(faults)
        return self._stream_view(201)

    def _take_stream_fault(self, prompt: str) -> Fault | None:
        for fault in self.stream_faults:
            if fault.prompt_contains and fault.prompt_contains not in prompt:
                continue
            if fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self.stream_faults.remove(fault)
            return fault
        return None

    def _rate(self, request: Request) -> float:
        for raw in (
            request.headers.get("x-sandbox-tokens-per-second"),
            request.query_params.get("tokens_per_second"),
        ):
            if raw:
                try:
                    return max(0.0, float(raw))
                except ValueError:
                    pass
        return self.rate if self.rate is not None else self.default_rate

    # Auth --------------------------------------------------------------------------

    def check_key(self, key: str | None) -> Response | None:
        if not key:
            return JSONResponse(
                _error_body(
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_request_error",
                    None,
                ),
                status_code=401,
            )
        if "invalid" in key:
            return _invalid_key(key)
        return None

    # Models ------------------------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        problem = self.check_bearer(request)
        if problem is not None:
            return problem
        return JSONResponse(
            {"object": "list", "data": [_model_object(m) for m in MODELS]},
            headers=_request_headers(),
        )

    async def get_model(self, request: Request) -> Response:
        problem = self.check_bearer(request)
        if problem is not None:
            return problem
        model = request.path_params["model"]
        if model not in MODELS:
            return _model_not_found(model)
        return JSONResponse(_model_object(model), headers=_request_headers())

    # Embeddings ---------------------------------------------------------------------

    async def embeddings(self, request: Request) -> Response:
        """`POST /v1/embeddings`: deterministic vectors (see openai_embeddings.py), as
        floats or as base64 of little-endian float32 (`encoding_format`)."""
        problem = self.check_bearer(request)
        if problem is not None:
            return problem
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self.error_response(400, message="We could not parse the JSON body.")
        if not isinstance(body, dict):
            return self.error_response(400, message="The body must be a JSON object.")
        model = body.get("model")
        if model not in embeddings.MODELS:
            return _model_not_found(str(model))
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if (
            not isinstance(texts, list)
            or not texts
            or len(texts) > 2048
            or not all(isinstance(t, str) and t for t in texts)
        ):
            return self.error_response(
                400, message="'input' must be a non-empty string or array of up to 2048 "
                "non-empty strings."
            )  # fmt: skip
        full = embeddings.MODELS[model]
        dims = body.get("dimensions", full)
        if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= full:
            return self.error_response(400, message=f"'dimensions' must be 1 to {full}.")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            return self.error_response(400, message="'encoding_format' must be float or base64.")
        if sum(embeddings.tokens(t) for t in texts) > 300_000 or any(
            embeddings.tokens(t) > 8192 for t in texts
        ):
            return self.error_response(
                400, message="This model's maximum context length is 8192 tokens."
            )
        data = []
        for index, text in enumerate(texts):
            vector = embeddings.embed(text, dims)
            value: Any = embeddings.as_base64(vector) if fmt == "base64" else vector
            data.append({"object": "embedding", "index": index, "embedding": value})
        used = sum(embeddings.tokens(t) for t in texts)
        return JSONResponse(
            {"object": "list", "data": data, "model": model,
             "usage": {"prompt_tokens": used, "total_tokens": used}},
            headers=_request_headers(),
        )  # fmt: skip

    # Chat completions --------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        entry: dict[str, Any] = request.scope.get("sandbox.entry", {})
        key = bearer(request)
        problem = self.check_key(key)
        if problem is not None:
            entry["error_code"] = "invalid_api_key"
            return problem
        try:
            body = await request.json()
        except ValueError:
            body = None
        invalid = _validate(body)
        if invalid is not None:
            entry["error_code"] = "invalid_request_error"
            return invalid
        model = body["model"]
        entry["model"], entry["stream"] = model, bool(body.get("stream"))
        if model not in MODELS:
            entry["error_code"] = "model_not_found"
            return _model_not_found(model)
        prompt = "\n".join(_content_text(m.get("content")) for m in body["messages"])
        prompt_tokens = (
            sum(estimate_tokens(_content_text(m.get("content"))) + 3 for m in body["messages"]) + 3
        )
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        reserve = int(limit) if isinstance(limit, int) else 0
        if prompt_tokens + reserve > MODELS[model]:
            entry["error_code"] = "context_length_exceeded"
            return _context_length(model, prompt_tokens + reserve)

        fault = self._take_stream_fault(prompt)
        if fault is not None and (fault.after_chunks is None or not entry["stream"]):
            entry["error_code"] = fault.kind
            return _fault_response(fault, key or "", model)

        words, finish = _generate(model, body["messages"], limit, self.answer_tokens)
        completion_id = f"chatcmpl-{hashlib.sha256(prompt.encode()).hexdigest()[:24]}"
        created = int(time.time())
        if not entry["stream"]:
            entry["chunks_sent"] = len(words)
            entry["finished_at"] = time.time()
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_sandbox",
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "".join(words),
                                "refusal": None,
                            },
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": _usage(prompt_tokens, len(words)),
                },
                headers=_request_headers(),
            )
        entry.update(chunks_sent=0, first_chunk_at=None, finished_at=None, disconnected_at=None)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return _SSEStream(  # type: ignore[return-value]  # an ASGI response of its own
            entry=entry,
            rate=self._rate(request),
            completion_id=completion_id,
            created=created,
            model=model,
            words=words,
            finish=finish,
            prompt_tokens=prompt_tokens,
            include_usage=include_usage,
            fault=fault,
            key=key or "",
        )


class _SSEStream:
    """An ASGI response that writes one SSE event per token at the requested rate and
    watches `receive()` for `http.disconnect`, recording the moment the client left."""

    def __init__(
        self,
        *,
        entry: dict[str, Any],
        rate: float,
        completion_id: str,
        created: int,
        model: str,
        words: list[str],
        finish: str,
        prompt_tokens: int,
        include_usage: bool,
        fault: Fault | None,
        key: str,
    ) -> None:
        self.entry = entry
        self.rate = rate
        self.completion_id = completion_id
        self.created = created
        self.model = model
        self.words = words
        self.finish = finish
        self.prompt_tokens = prompt_tokens
        self.include_usage = include_usage
        self.fault = fault
        self.key = key

    def _chunk(self, delta: dict[str, Any], finish: str | None, usage: Any = None) -> bytes:
        payload: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_sandbox",
            "choices": (
                []
                if usage is not None
                else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            ),
        }
        if self.include_usage:
            payload["usage"] = usage
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    async def _body(self, send: Any) -> None:
        entry = self.entry
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        start = time.monotonic()

        async def emit(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        await emit(self._chunk({"role": "assistant", "content": "", "refusal": None}, None))
        entry["first_chunk_at"] = time.time()
        for i, word in enumerate(self.words):
            if self.fault is not None and i >= (self.fault.after_chunks or 0):
                entry["error_code"] = self.fault.kind
                error = _fault_body(self.fault, self.key, self.model)
                await emit(b"data: " + json.dumps(error).encode() + b"\n\n")
                entry["finished_at"] = time.time()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if interval:
                delay = start + (i + 1) * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            await emit(self._chunk({"content": word}, None))
            entry["chunks_sent"] += 1
        await emit(self._chunk({}, self.finish))
        if self.include_usage:
            await emit(self._chunk({}, None, _usage(self.prompt_tokens, len(self.words))))
        await emit(b"data: [DONE]\n\n")
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        entry["finished_at"] = time.time()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            *[(k.encode(), v.encode()) for k, v in _request_headers().items()],
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = asyncio.ensure_future(self._body(send))
        watch = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait({body, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch in done and not body.done():
                self.entry["disconnected_at"] = time.time()
            if body in done and body.exception() is not None:
                # The transport refused a write: the client is gone.
                if self.entry.get("disconnected_at") is None:
                    self.entry["disconnected_at"] = time.time()
        finally:
            for task in (body, watch):
                task.cancel()
            for task in (body, watch):
                try:
                    await task
                except BaseException:  # noqa: S110 - cancelled or failed writes after a disconnect
                    pass


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _validate(body: Any) -> Response | None:
    def bad(message: str, param: str) -> Response:
        return JSONResponse(
            _error_body(message, "invalid_request_error", None, param), status_code=400
        )

    if not isinstance(body, dict):
        return bad("We could not parse the JSON body of your request.", "body")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return bad("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return bad("[] is too short - 'messages'", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in {
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
        }:
            return bad(f"Invalid value for 'messages[{i}].role'.", f"messages[{i}].role")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            return bad(f"Invalid '{name}': integer below minimum value.", name)
    temperature = body.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float) or not 0 <= temperature <= 2
    ):
        return bad("Invalid 'temperature': must be between 0 and 2.", "temperature")
    return None


def _generate(
    model: str, messages: list[dict[str, Any]], limit: Any, length: int | None = None
) -> tuple[list[str], str]:
    seed_src = json.dumps([model, messages], sort_keys=True, separators=(",", ":"))
    rng = random.Random(hashlib.sha256(seed_src.encode()).digest())
    # Drawn even when `length` is set: a set length keeps the default answer's first words.
    count = rng.randint(24, 64)
    if length is not None:
        count = length
    finish = "stop"
    if isinstance(limit, int) and limit < count:
        count, finish = limit, "length"
    words = []
    for i in range(count):
        word = rng.choice(_WORDS)
        if i == 0:
            word = word.capitalize()
        words.append(word if i == 0 else " " + word)
    if words and finish == "stop":
        words[-1] += "."
    return words, finish


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": CREATED, "owned_by": "system"}


def _request_headers() -> dict[str, str]:
    return {
        "x-request-id": f"req_{uuid.uuid4().hex[:24]}",
        "openai-processing-ms": "1",
        "openai-version": "2020-10-01",
    }


def _invalid_key(key: str) -> Response:
    return JSONResponse(
        _error_body(
            f"Incorrect API key provided: {_mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        ),
        status_code=401,
    )


def _model_not_found(model: str) -> Response:
    return JSONResponse(
        _error_body(
            f"The model `{model}` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        ),
        status_code=404,
    )


def _context_length(model: str, tokens: int) -> Response:
    return JSONResponse(
        _error_body(
            f"This model's maximum context length is {MODELS[model]} tokens. However, your "
            f"messages resulted in {tokens} tokens. Please reduce the length of the messages.",
            "invalid_request_error",
            "context_length_exceeded",
            "messages",
        ),
        status_code=400,
    )


def _fault_body(fault: Fault, key: str, model: str) -> dict[str, Any]:
    if fault.kind == "rate_limit":
        return _error_body(
            f"Rate limit reached for {model} in organization org-sandbox on requests per min "
            f"(RPM): Limit 3, Used 3, Requested 1. Please try again in {fault.retry_after}s.",
            "requests",
            "rate_limit_exceeded",
        )
    if fault.kind == "invalid_api_key":
        return json.loads(bytes(_invalid_key(key).body))
    if fault.kind == "context_length_exceeded":
        return json.loads(bytes(_context_length(model, MODELS[model] + 1).body))
    return _error_body(
        "The server had an error while processing your request.", "server_error", None
    )


def _fault_response(fault: Fault, key: str, model: str) -> Response:
    status = _FAULT_STATUS[fault.kind]
    headers = {"retry-after": str(fault.retry_after)} if status == 429 else {}
    if status == 429:
        headers["x-ratelimit-limit-requests"] = "3"
        headers["x-ratelimit-remaining-requests"] = "0"
        headers["x-ratelimit-reset-requests"] = f"{fault.retry_after}s"
    return JSONResponse(_fault_body(fault, key, model), status_code=status, headers=headers)


def create_app(tokens_per_second: float = 200.0) -> OpenAISandbox:
    return OpenAISandbox(tokens_per_second=tokens_per_second)
