"""The sandbox framework: emulators of vendors' public HTTP APIs, with fault injection.

A sandbox is a small ASGI app that answers on the vendor's paths with the vendor's
JSON shapes, headers and error bodies, so the real provider client runs against
it unchanged — only the base URL differs. The gateway mounts each one under
`/sandbox/<provider>` (gateway/http/sandbox.py) when sandboxes are enabled; tests
and benchmarks serve one on its own with uvicorn.

Writing an emulator (see providers/sandbox/resend.py):

    class AcmeSandbox(Sandbox):
        provider = "acme"

        def routes(self) -> list[BaseRoute]:
            return [Route("/v1/things", self.create_thing, methods=["POST"])]

        def error_response(self, status, *, code=None, message=None, headers=None):
            # the vendor's error body for `status` (used by your handlers and by faults)
            return JSONResponse({"error": {"code": code or "...", "message": ...}},
                                status, headers=headers)

        async def create_thing(self, request: Request) -> Response:
            if (denied := self.check_bearer(request)) is not None:
                return denied
            ...

    def create_app() -> AcmeSandbox:
        return AcmeSandbox()

and add `"acme": "providers.sandbox.acme:create_app"` to `SANDBOXES` in
providers/sandbox/__init__.py. Override `check_key` for the vendor's key rules
(the default: a missing key is a 401, any key containing `invalid` a 403).

What every sandbox gets from the base, under `/_sandbox/` of its own app:

- `POST /_sandbox/faults` — one fault object or `{"faults": [...]}`. A fault hits
  the next `count` matching requests (default 1; -1 = until cleared), optionally
  only those whose `method` and/or `path` (prefix) match:
    `{"status": 503, "count": 2, "retry_after": 1}` — answer that status with the
        vendor's error body (`error_response`), plus `Retry-After` when given;
    `{"latency_ms": 500, "count": 3}` — stall before answering normally (a client
        that gives up ends the stall); combinable with `status`;
    `{"cut": true}` — close the TCP connection without answering.
  `GET` lists pending faults, `DELETE` clears them.
- `GET /_sandbox/requests` — every request received (faulted ones too, control
  ones never): method, path, query, headers (credentials masked), body (JSON when
  it parses), `at` (wall clock on arrival), `status`, `fault`. `DELETE` clears.
- `GET /_sandbox/stats` — `in_flight`, `max_in_flight` (the most requests served at
  once), `requests`. `DELETE` resets the counters.
- `GET /_sandbox/webhooks` — the signed webhook callbacks the emulator posted (see
  providers/sandbox/callbacks.py; the receiver is set from Python only, with
  `sandbox.callbacks.configure(url)`): url, attempt, headers, body, status or error.
  `DELETE` clears the list.
- `POST /_sandbox/reset` — faults, recordings, counters and the emulator's own
  state (`reset_state`) back to empty.

Sandboxes are for development and tests: their state lives in memory, control
endpoints are unauthenticated, and the gateway never mounts them in production
unless SANDBOX_ENABLED=true.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from providers.sandbox.callbacks import Callbacks

CONTROL_PREFIX = "/_sandbox"
MAX_RECORDED_BODY = 64 * 1024
_MASKED_HEADERS = {"authorization", "x-api-key", "api-key", "cookie", "proxy-authorization"}


@dataclass(slots=True)
class Fault:
    status: int | None = None
    retry_after: float | None = None
    latency_ms: float = 0.0
    cut: bool = False
    count: int = 1  # -1: until cleared
    method: str | None = None
    path: str | None = None  # prefix of the path inside the sandbox
    code: str | None = None  # vendor error code override
    message: str | None = None

    @classmethod
    def parse(cls, data: Any) -> Fault:
        if not isinstance(data, dict):
            raise ValueError("a fault is a JSON object")
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        fault = cls(**data)
        if fault.status is not None and (
            not isinstance(fault.status, int) or not 100 <= fault.status <= 599
        ):
            raise ValueError("status must be an HTTP status code")
        if not isinstance(fault.count, int) or fault.count == 0 or fault.count < -1:
            raise ValueError("count must be a positive integer or -1")
        for name in ("retry_after", "latency_ms"):
            value = getattr(fault, name)
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise ValueError(f"{name} must be a non-negative number")
        if not isinstance(fault.cut, bool):
            raise ValueError("cut must be true or false")
        if fault.status is None and not fault.cut and not fault.latency_ms:
            raise ValueError("a fault needs status, latency_ms or cut")
        if fault.method is not None:
            fault.method = str(fault.method).upper()
        return fault

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or path.startswith(self.path)
        )


def mask_secret(value: str) -> str:
    """`Bearer re_abc…` -> `Bearer [sha256:1a2b3c4d]`: tests can compare keys, never read them."""
    scheme, _, secret = value.partition(" ")
    if not secret:
        scheme, secret = "", value
    digest = hashlib.sha256(secret.encode()).hexdigest()[:8]
    return f"{scheme} [sha256:{digest}]".strip()


def mounted_url(request: Request) -> str:
    """The emulator's own URL as the caller reached it, under wherever it is mounted
    (`root_path`: Starlette's `base_url` is the top-level app's), without a trailing /."""
    return str(request.url.replace(path=request.scope.get("root_path", ""), query="")).rstrip("/")


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Sandbox(abc.ABC):
    """Base of every vendor emulator. Subclasses set `provider` and implement
    `routes()` and `error_response()`; everything else is shared."""

    provider: ClassVar[str] = ""
    max_recorded: ClassVar[int] = 5000

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.recorded: deque[dict[str, Any]] = deque(maxlen=self.max_recorded)
        self.in_flight = 0
        self.max_in_flight = 0
        self.total = 0
        self._seq = 0
        # Signed webhook callbacks, for vendors that send them (posts nothing until configured).
        self.callbacks = Callbacks(self.provider)
        self._control = Starlette(routes=self._control_routes())
        self._vendor = Starlette(routes=self.routes())

    # To implement ---------------------------------------------------------------------

    @abc.abstractmethod
    def routes(self) -> list[BaseRoute]:
        """The vendor's paths, as Starlette routes."""

    def error_response(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """The vendor's error answer for `status`. Override with the vendor's body shape."""
        return JSONResponse(
            {"error": {"status": status, "code": code, "message": message or "error"}},
            status,
            headers=headers,
        )

    def reset_state(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Forget the emulator's own data (sent emails, ...). Override when there is some."""

    def check_key(self, key: str | None) -> Response | None:
        """None when `key` is accepted, else the vendor's refusal."""
        if not key:
            return self.error_response(401, code="missing_api_key", message="Missing API key.")
        if "invalid" in key:
            return self.error_response(403, code="invalid_api_key", message="API key is invalid.")
        return None

    def check_bearer(self, request: Request) -> Response | None:
        return self.check_key(bearer(request))

    # ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._vendor(scope, receive, send)
            return
        path = get_route_path(scope)
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            await self._control(scope, receive, send)
            return
        self.in_flight += 1
        self.total += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        try:
            await self._serve(scope, receive, send, path)
        finally:
            self.in_flight -= 1

    async def _serve(self, scope: Any, receive: Any, send: Any, path: str) -> None:
        body, more_body_receive = await _read_body(receive)
        method = scope["method"]
        fault = self._take_fault(method, path)
        entry = self._record(scope, path, body, fault)
        status_box: list[int] = []

        async def recording_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box.append(message["status"])
                entry["status"] = message["status"]
            await send(message)

        if fault is not None:
            if fault.latency_ms:
                gone = await _stall(more_body_receive, fault.latency_ms / 1000)
                if gone:
                    entry["status"] = None
                    entry["disconnected"] = True
                    return
            if fault.cut:
                entry["status"] = None
                await _cut(receive, send)
                return
            if fault.status is not None:
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = _header_number(fault.retry_after)
                response = self.error_response(
                    fault.status, code=fault.code, message=fault.message, headers=headers
                )
                await response(scope, more_body_receive, recording_send)
                return
        await self._vendor(scope, _replay(body, more_body_receive), recording_send)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for i, fault in enumerate(self.faults):
            if fault.matches(method, path):
                if fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        del self.faults[i]
                return fault
        return None

    def _record(self, scope: Any, path: str, body: bytes, fault: Fault | None) -> dict[str, Any]:
        self._seq += 1
        headers: dict[str, str] = {}
        for raw_key, raw_value in scope.get("headers", ()):
            key = raw_key.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[key] = mask_secret(value) if key in _MASKED_HEADERS else value
        parsed: Any
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body[:MAX_RECORDED_BODY].decode("utf-8", "replace")
        entry: dict[str, Any] = {
            "seq": self._seq,
            "method": scope["method"],
            "path": path,
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": headers,
            "body": parsed,
            "at": time.time(),
            "status": None,
            "fault": _fault_summary(fault),
        }
        self.recorded.append(entry)
        return entry

    # Control endpoints ---------------------------------------------------------------

    def _control_routes(self) -> list[BaseRoute]:
        p = CONTROL_PREFIX
        return [
            Route(f"{p}/faults", self._faults, methods=["GET", "POST", "DELETE"]),
            Route(f"{p}/requests", self._requests, methods=["GET", "DELETE"]),
            Route(f"{p}/stats", self._stats, methods=["GET", "DELETE"]),
            Route(f"{p}/webhooks", self._webhooks, methods=["GET", "DELETE"]),
            Route(f"{p}/reset", self._reset, methods=["POST"]),
        ]

    def _faults_view(self) -> JSONResponse:
        return JSONResponse({"faults": [asdict(f) for f in self.faults]})

    async def _faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
            return self._faults_view()
        if request.method == "GET":
            return self._faults_view()
        try:
            data = json.loads(await request.body())
            items = data["faults"] if isinstance(data, dict) and "faults" in data else [data]
            if not isinstance(items, list):
                raise ValueError("faults must be a list")
            parsed = [Fault.parse(item) for item in items]
        except (ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"error": f"bad fault: {exc}"}, 400)
        self.faults.extend(parsed)
        return JSONResponse({"faults": [asdict(f) for f in self.faults]}, 201)

    async def _requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.recorded.clear()
            return JSONResponse({"requests": []})
        method = request.query_params.get("method")
        prefix = request.query_params.get("path")
        items = [
            r
            for r in self.recorded
            if (not method or r["method"] == method.upper())
            and (not prefix or r["path"].startswith(prefix))
        ]
        return JSONResponse({"requests": items})

    async def _webhooks(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.callbacks.deliveries.clear()
        return JSONResponse({"webhooks": self.callbacks.recorded()})

    async def aclose(self) -> None:
        """Stop the background work (webhook callbacks in flight): the app's shutdown."""
        await self.callbacks.aclose()

    def stats(self) -> dict[str, int]:
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "requests": self.total,
        }

    async def _stats(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.max_in_flight = self.in_flight
            self.total = 0
        return JSONResponse(self.stats())

    async def _reset(self, request: Request) -> Response:
        self.faults.clear()
        self.recorded.clear()
        self.max_in_flight = self.in_flight
        self.total = 0
        self.callbacks.deliveries.clear()
        self.reset_state()
        return JSONResponse({"reset": True})


# Plumbing ------------------------------------------------------------------------------


def _fault_summary(fault: Fault | None) -> dict[str, Any] | None:
    if fault is None:
        return None
    return {
        k: v
        for k, v in (
            ("status", fault.status),
            ("latency_ms", fault.latency_ms or None),
            ("cut", fault.cut or None),
        )
        if v is not None
    }


def _header_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


async def _read_body(receive: Any) -> tuple[bytes, Any]:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # disconnect before the body ended
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks), receive


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as servers do

    return replay


async def _stall(receive: Any, seconds: float) -> bool:
    """Wait `seconds`, or less if the client goes away; True when it went away."""

    async def disconnected() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    try:
        await asyncio.wait_for(disconnected(), seconds)
    except TimeoutError:
        return False
    return True


def _find_transport(fn: Any, depth: int = 0) -> asyncio.BaseTransport | None:
    """The server's transport behind a `receive` callable (uvicorn's request cycle
    holds it; middlewares wrap `receive` in closures, which are searched a few deep)."""
    if fn is None or depth > 6:
        return None
    owner = getattr(fn, "__self__", None)
    transport = getattr(owner, "transport", None)
    if isinstance(transport, asyncio.BaseTransport):
        return transport
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            inner = cell.cell_contents
        except ValueError:
            continue
        if callable(inner):
            found = _find_transport(inner, depth + 1)
            if found is not None:
                return found
    return None


async def _cut(receive: Any, send: Any) -> None:
    """Close the connection without an answer. Without a reachable transport (an
    unknown server), start an answer and abandon it, which servers end with a close."""
    transport = _find_transport(receive)
    if transport is not None:
        transport.close()
        for _ in range(3):  # let the server see the connection go before we return
            await asyncio.sleep(0)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"1024"), (b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
