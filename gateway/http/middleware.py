"""One pure-ASGI middleware for what every request needs before routing.

Request id (kept when the caller sends a sane one), client address (trusting
X-Forwarded-For only from configured proxies), body size cap, authentication of
the bearer token, the per-principal / per-address rate limits with their headers
(webhooks are limited by their route, per identified source), and one access-log
line naming the route, never a secret path parameter. Pure ASGI because it runs on every
request and BaseHTTPMiddleware's task hop costs real throughput.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
import uuid
from typing import Any

from starlette.routing import Route

from gateway.http.metrics import loggable_path, observe_request
from gateway.http.responses import (
    GRAPHQL_PREFIX,
    GRAPHQL_RESPONSE,
    error_body,
    gateway_error_body,
    prefers_graphql_response,
    send_json,
)
from kit.errors import GatewayError, RateLimited, Unauthenticated
from kit.logging import request_id_var
from kit.ratelimit import Decision
from kit.security import API_KEY_PREFIX, Principal
from kit.ttl_cache import TTLCache
from resolvers import authority
from resolvers.auth import authenticate, bearer_token
from resolvers.context import Context, Services

log = logging.getLogger("switchboard.http")


def request_context(services: Services, conn: Any, response: Any = None) -> Context:
    """The resolvers' Context for an HTTP or WebSocket connection, from what this
    middleware put in its scope's state (request id, principal, client address)."""
    state = conn.scope.get("state", {})
    return Context(
        services=services,
        request_id=state.get("request_id") or uuid.uuid4().hex,
        principal=state.get("principal"),
        client_ip=state.get("client_ip", "unknown"),
        user_agent=conn.headers.get("user-agent", "")[:300],
        request=conn,
        response=response,
    )


_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
VERIFIED_TOKENS = 10_000
EXEMPT_PREFIXES = ("/health", "/metrics", "/sandbox", "/graphiql/assets")
WEBHOOK_PREFIX = "/webhooks/"
UPLOAD_PREFIX = "/files/upload/"


class BodyTooLarge(GatewayError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _carries_files(scope: dict[str, Any], path: str) -> bool:
    """A multipart GraphQL request, or a direct upload to the local store."""
    if path.startswith(UPLOAD_PREFIX):
        return scope["method"] == "PUT"
    if path.startswith(GRAPHQL_PREFIX):
        media = (_header(scope, b"content-type") or "")[:19].lower()
        return media == "multipart/form-data"
    return False


class GatewayMiddleware:
    def __init__(self, app: Any, services: Services, direct: Route | None = None) -> None:
        self.app = app
        # The route nearly every request takes, entered without the router's scan and
        # exception layer (its endpoint answers its own errors); the router still serves
        # it for a method the route does not take (its 405).
        self.direct = direct
        self.services = services
        self.settings = services.settings
        self.trusted = set(self.settings.trusted_proxies)
        self.deadlines = BodyDeadlines(self.settings.body_read_timeout_seconds)
        # Access tokens this process already verified, until they expire: a client sends
        # the same JWT all its life, and its content cannot change. What it claims is not
        # trusted beyond that: the member's current standing is checked after this cache on
        # every request (`resolvers.authority.current`). API keys are never cached: revoking
        # one must bite at once.
        self.tokens: TTLCache[str, Principal] = TTLCache(VERIFIED_TOKENS)

    async def principal(self, header: str | None) -> Principal | None:
        """The caller with the authority it holds now (not what its token claims)."""
        token = bearer_token(header)
        if token is None:
            return None
        principal = self.tokens.get(token, time.time())
        if principal is None:
            principal = await authenticate(self.settings, token)
            if principal is None:
                return None
            if not token.startswith(API_KEY_PREFIX) and principal.expires_at is not None:
                self.tokens.put(token, principal, principal.expires_at, self.tokens.generation)
        return await authority.current(self.services, principal)

    def client_ip(self, scope: dict[str, Any]) -> str:
        """The peer, or behind trusted proxies the right-most X-Forwarded-For hop that is
        not one of them: proxies append, so the left-most entries are whatever the client
        chose to send and must not pick its rate-limit budget."""
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        if peer not in self.trusted:
            return peer
        forwarded = _header(scope, b"x-forwarded-for")
        if not forwarded:
            return peer
        for hop in reversed(forwarded.split(",")):
            hop = hop.strip()
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer  # a malformed chain: believe only the proxy itself
            if hop not in self.trusted:
                return hop
        return peer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_ip"] = self.client_ip(scope)
        try:
            if kind == "websocket":
                await self.app(scope, receive, send)
            else:
                await self._http(scope, receive, send, request_id, state)
        finally:
            request_id_var.reset(token)

    async def _http(
        self, scope: dict[str, Any], receive: Any, send: Any, request_id: str, state: dict[str, Any]
    ) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        extra_headers: dict[str, str] = {"X-Request-ID": request_id}
        status_box = [500]
        response_started = [False]

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                response_started[0] = True
                headers = list(message.get("headers", []))
                headers.extend((k.lower().encode(), v.encode()) for k, v in extra_headers.items())
                message = {**message, "headers": headers}
            await send(message)

        try:
            length = _header(scope, b"content-length")
            limit = self.settings.max_body_bytes
            if _carries_files(scope, path):
                # Files: each part is limited while it streams (gateway/http/uploads.py,
                # gateway/http/files.py); this bounds the request as a whole.
                limit = self.settings.max_upload_request_bytes
            if length is not None and length.isdigit() and int(length) > limit:
                raise BodyTooLarge(f"Request body is larger than {limit} bytes.", limit=limit)
            receive = _capped(receive, limit, self.deadlines)
            exempt = path.startswith(EXEMPT_PREFIXES)
            if not exempt:
                principal = None
                if not path.startswith(WEBHOOK_PREFIX):
                    try:
                        principal = await self.principal(_header(scope, b"authorization"))
                    except Unauthenticated:
                        # A refused bearer is an anonymous request: it spends the address's
                        # budget, so guessing keys and replaying dead tokens is throttled.
                        await self._spend_anonymous(state, extra_headers)
                        raise
                state["principal"] = principal
                # Webhooks are limited by their route once the source is known (per
                # source; unknown addresses per client), not here by provider.
                if self.settings.rate_limit_enabled and not path.startswith(WEBHOOK_PREFIX):
                    decision = await self._rate_limit(path, principal, state)
                    if decision is not None:
                        extra_headers.update(decision.headers())
                        if not decision.allowed:
                            raise RateLimited(decision.retry_after, "Rate limit exceeded.")
            direct = self.direct
            if (
                direct is not None
                and path == direct.path
                and scope["method"] in (direct.methods or ())
            ):
                scope["route"] = direct
                scope["endpoint"] = direct.endpoint
                scope["path_params"] = {}
                await direct.app(scope, receive, send_with_headers)  # type: ignore[arg-type]
            else:
                await self.app(scope, receive, send_with_headers)
        except GatewayError as exc:
            if response_started[0]:
                raise
            headers = dict(extra_headers)
            if isinstance(exc, RateLimited):
                headers["Retry-After"] = str(exc.retry_after)
            status_box[0] = exc.http_status
            media = "application/json"
            if path.startswith(GRAPHQL_PREFIX) and prefers_graphql_response(
                _header(scope, b"accept") or ""
            ):
                media = GRAPHQL_RESPONSE
            await send_json(
                send, exc.http_status, gateway_error_body(path, exc, request_id), headers, media
            )
        except Exception:
            # Anything unexpected: the traceback goes to the log under the request id, the
            # caller gets a coded 500 with that id and no detail.
            log.exception("unhandled error in %s %s", scope["method"], loggable_path(scope))
            if response_started[0]:
                raise
            status_box[0] = 500
            body = error_body(path, "INTERNAL_SERVER_ERROR", "Unexpected error.", request_id)
            await send_json(send, 500, body, {"X-Request-ID": request_id})
        finally:
            if self.deadlines.reading:  # a body left half-read must not stay watched
                self.deadlines.end(asyncio.current_task())  # type: ignore[arg-type]
            observe_request(scope, status_box[0], time.perf_counter() - started)
            log.info(
                "%s %s %s",
                scope["method"],
                loggable_path(scope),  # never a token from the path
                status_box[0],
                extra={
                    "status": status_box[0],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "client_ip": state.get("client_ip"),
                },
            )

    async def _spend_anonymous(self, state: dict[str, Any], headers: dict[str, str]) -> None:
        if not self.settings.rate_limit_enabled:
            return
        decision = await self._rate_limit("", None, state)
        if decision is not None:
            headers.update(decision.headers())
            if not decision.allowed:
                raise RateLimited(decision.retry_after, "Rate limit exceeded.")

    async def _rate_limit(
        self, path: str, principal: Any, state: dict[str, Any]
    ) -> Decision | None:
        """The caller's budget, or None when the counter store is unreachable: the request
        then goes through (an outage of Redis must not become an outage of the API)."""
        s = self.settings
        if principal is not None:
            spec = await authority.rate_limit_of(self.services, principal.tenant_id)
            identity = ("principal", principal.key)
        else:
            spec, identity = s.rate_limit_anonymous, ("address", state["client_ip"])
        try:
            return await self.services.limiter.hit(spec, *identity)
        except Exception:
            log.error("rate limiter unavailable; request let through", exc_info=True)
            return None


class BodyTimeout(GatewayError):
    code = "REQUEST_TIMEOUT"
    http_status = 408


class BodyDeadlines:
    """Requests whose body is still arriving, and when each must be in.

    One sweep every quarter of the timeout (at most a second) for the whole process
    cancels a read that is past its deadline; a request costs a dict entry, not a timer
    of its own (a timer per request was a tenth of a cached `me` in the profile). Only
    a read in progress is cancelled, never the app between reads."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reading: dict[asyncio.Task[Any], list[Any]] = {}  # task -> [deadline, waiting]
        self.expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def begin(self, task: asyncio.Task[Any]) -> None:
        loop = asyncio.get_running_loop()
        self.reading[task] = [loop.time() + self.timeout, False]
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep(), name="body-deadlines")

    def end(self, task: asyncio.Task[Any]) -> None:
        self.reading.pop(task, None)
        self.expired.discard(task)

    async def _sweep(self) -> None:
        interval = min(1.0, self.timeout / 4)
        loop = asyncio.get_running_loop()
        while self.reading:
            await asyncio.sleep(interval)
            now = loop.time()
            for task, state in list(self.reading.items()):
                if now >= state[0] and task not in self.expired:
                    self.expired.add(task)
                    if state[1]:
                        task.cancel()


def _capped(receive: Any, limit: int, deadlines: BodyDeadlines) -> Any:
    """Stop reading a chunked body that grows past the limit, or that takes longer than
    the deadline in all to arrive (a client trickling bytes holds a slot otherwise)."""
    seen = 0
    done = False
    task: asyncio.Task[Any] | None = None

    def timed_out() -> BodyTimeout:
        return BodyTimeout(
            f"The request body did not arrive within {deadlines.timeout:g} seconds.",
            limit=deadlines.timeout,
        )

    async def wrapped() -> dict[str, Any]:
        nonlocal seen, done, task
        if done:  # the body is in; what follows is the wait for a disconnect
            return await receive()
        if task is None:
            task = asyncio.current_task()
            assert task is not None
            deadlines.begin(task)
        state = deadlines.reading.get(task)
        if state is None or task in deadlines.expired:
            deadlines.end(task)
            raise timed_out()
        state[1] = True
        try:
            message = await receive()
        except asyncio.CancelledError:
            if task not in deadlines.expired:
                raise
            deadlines.end(task)
            task.uncancel()
            raise timed_out() from None
        finally:
            state[1] = False
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                deadlines.end(task)
                raise BodyTooLarge(f"Request body is larger than {limit} bytes.", limit=limit)
            done = not message.get("more_body", False)
        else:
            done = True
        if done:
            deadlines.end(task)
        return message

    return wrapped
