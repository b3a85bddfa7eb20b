"""Strawberry's ASGI view, configured for the gateway.

- builds the resolvers' Context from what the middleware found (principal, ids);
- authenticates WebSocket connections from the `connection_init` payload, with the
  caller's current authority, and keeps checking it per operation and on every change
  (`gateway/http/websocket.py`);
- answers malformed requests with coded JSON errors instead of plain text;
- speaks `application/graphql-response+json` with the spec's status codes when the
  client accepts it (GraphQL over HTTP), plain `application/json` otherwise;
- answers repeated viewer-scoped queries from the response cache
  (`kit/response_cache.py`) before any context is built.

The response cache, per request: a signed-in caller's JSON POST is keyed by (principal
key, tenant, role, raw body). A fresh entry is sent as it is, with the content type the
client asked for; the middleware around this view has already set the request id,
authenticated the caller (API keys against the store, every time), counted the rate
limit, and will write the access log line and HTTP metrics; the hit also counts as a
GraphQL operation. On a miss the request runs as usual; when the schema extension finds
the answer error-free and the operation cacheable (`schema/cache_control.py`), the body
is stored for the smallest hint, at most `VIEWER_CACHE_SECONDS`, and never beyond the
cached viewer profiles it was built from (so other processes' writes still show within
that bound).
"""

from __future__ import annotations

import time
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from gateway.http import uploads
from gateway.http.fanout import Fanout
from gateway.http.graphiql import offline_html
from gateway.http.middleware import request_context
from gateway.http.responses import (
    GRAPHQL_RESPONSE,
    JSON,
    encode_json,
    error_body,
    gateway_error_body,
    negotiate,
    prefers_graphql_response,
)
from gateway.http.websocket import GuardedTransportWS
from kit import response_cache
from kit.errors import GatewayError
from resolvers import authority, files, viewer_cache
from resolvers.auth import authenticate, bearer_token
from resolvers.context import Context, Services
from resolvers.storage import storage_of
from schema.errors import finish_errors
from schema.metrics import record_cached_operation

_HTTP_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


_NOT_CACHED: Any = object()


def _wants_graphql_response(request: Request) -> bool:
    return prefers_graphql_response(request.headers.get("accept", ""))


def _is_request_error(data: Any) -> bool:
    if not isinstance(data, dict) or data.get("data") is not None or not data.get("errors"):
        return False
    return all("path" not in error for error in data["errors"])


ACCEPTED_BODIES = ("application/json", "multipart/form-data")


def _refused_media(scope: Any) -> tuple[int, str, str] | None:
    """GraphQL over HTTP: a POST body that is not JSON is 415; an Accept header that allows
    neither JSON answer is 406 (a browser's GET for GraphiQL asks for HTML, and gets it)."""
    content_type = accept = None
    for name, value in scope["headers"]:  # the first of each, as starlette's Headers
        if name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif name == b"accept" and accept is None:
            accept = value.decode("latin-1")
    if scope["method"] == "POST":
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media not in ACCEPTED_BODIES:
            return (
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "Send the request as application/json (or multipart/form-data with files).",
            )
    if accept is not None and negotiate(accept) is None:
        if not (scope["method"] == "GET" and "text/html" in accept):
            return (
                406,
                "NOT_ACCEPTABLE",
                f"Accept {JSON} or {GRAPHQL_RESPONSE}.",
            )
    return None


class _Post:
    """What `execute_single` reads of a request adapter."""

    method = "POST"


_POST = _Post()


def _single_request(data: dict[str, Any]) -> GraphQLRequestData:
    """One operation's fields, refused as strawberry refuses them."""
    query, variables, extensions = data.get("query"), data.get("variables"), data.get("extensions")
    if not isinstance(query, str | None):
        raise HTTPException(
            400, "The GraphQL operation's `query` must be a string or null, if provided."
        )
    if not isinstance(variables, dict | None):
        raise HTTPException(
            400, "The GraphQL operation's `variables` must be an object or null, if provided."
        )
    if not isinstance(extensions, dict | None):
        raise HTTPException(
            400, "The GraphQL operation's `extensions` must be an object or null, if provided."
        )
    return GraphQLRequestData(
        query=query,
        variables=variables,
        operation_name=data.get("operationName"),
        extensions=extensions,
        protocol="http",
    )


class GatewayGraphQL(GraphQL):
    graphql_transport_ws_handler_class = GuardedTransportWS  # type: ignore[assignment]

    def __init__(self, schema: Any, services: Services) -> None:
        settings = services.settings
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql_enabled else None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            multipart_uploads_enabled=True,
            allowed_origins=settings.allowed_origins,
            keep_alive=False,
        )
        self.services = services
        self.fanout = Fanout(schema, services)
        self.ide_html = offline_html() if settings.graphiql_enabled else ""
        self.responses: response_cache.ResponseCache | None = None
        if settings.viewer_cache_seconds > 0 and settings.response_cache_entries > 0:
            self.responses = services.response_cache
            self.responses.max_entries = settings.response_cache_entries

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:  # type: ignore[override]
        return request_context(self.services, request, response)

    async def on_ws_connect(self, context: Context) -> UnsetType:  # type: ignore[override]
        params = context.connection_params or {}
        # Read once: kept for the socket's life, the payload (an access token, often a
        # kilobyte) would cost every idle socket memory and keep a secret around.
        context.connection_params = None
        raw = params.get("Authorization") or params.get("authorization")
        token = params.get("token") or params.get("accessToken")
        try:
            if raw:
                context.principal = await authenticate(
                    self.services.settings, bearer_token(str(raw))
                )
            elif token:
                context.principal = await authenticate(self.services.settings, str(token))
            if context.principal is not None:
                context.principal = await authority.current(self.services, context.principal)
        except GatewayError as exc:
            raise ConnectionRejectionError({"code": exc.code, "message": exc.message}) from None
        return UNSET  # a plain `connection_ack`, no payload

    @property
    def graphql_ide_html(self) -> str:
        return self.ide_html

    def parse_json(self, data: str | bytes) -> Any:
        """JSON that is an object (or a list, which batching then refuses); anything else,
        invalid UTF-8 and absurd nesting included, is a coded 400 rather than a crash."""
        try:
            parsed = self.decode_json(data)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError
            raise HTTPException(400, "Unable to parse request body as JSON") from None
        if not isinstance(parsed, dict | list):
            raise HTTPException(400, "The request body must be a JSON object.")
        return parsed

    async def execute_single(
        self,
        request: Any,
        request_adapter: Any,
        sub_response: Any,
        context: Any,
        root_value: Any,
        request_data: Any,
    ) -> Any:  # type: ignore[override]
        """Strawberry's, with subscriptions refused over HTTP (they are served over the
        WebSocket, where each operation's principal is checked) and GraphQL over HTTP's
        405 for a mutation sent with GET."""
        method = request_adapter.method
        allowed = OperationType.from_http(method) - {OperationType.SUBSCRIPTION}
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as exc:
            raise HTTPException(400, exc.as_http_error_reason()) from exc
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise HTTPException(
                    400,
                    "Subscriptions are served over WebSocket (graphql-transport-ws) at "
                    "/graphql, not over HTTP.",
                ) from exc
            if method == "GET":
                raise HTTPException(405, exc.as_http_error_reason(method)) from exc
            raise HTTPException(400, exc.as_http_error_reason(method)) from exc
        except MissingQueryError as exc:
            raise HTTPException(400, "No GraphQL query found in the request") from exc

    def _get_stream_transport(self, protocol: Any) -> Any:
        # No multipart/SSE subscriptions over HTTP: they would bypass the socket's checks.
        return None

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        response = await super().get_sub_response(request)
        wants = isinstance(request, Request) and _wants_graphql_response(request)
        setattr(response, "_graphql_response", wants)  # noqa: B010 - read in create_response
        return response

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        wants = getattr(sub_response, "_graphql_response", False)
        request_error = wants and _is_request_error(response_data)
        if request_error:
            # Parse, validation or variable errors: nothing executed, so no `data` entry.
            response_data = {k: v for k, v in response_data.items() if k != "data"}
        response = super().create_response(response_data, sub_response)
        if wants:
            response.headers["content-type"] = GRAPHQL_RESPONSE
            if request_error:
                response.status_code = 400
        return response

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        refusal = _refused_media(scope)
        if refusal is not None:
            status, code, message = refusal
            body = error_body("/graphql", code, message, scope.get("state", {}).get("request_id"))
            await Response(body, status, media_type="application/json")(scope, receive, send)
            return
        if scope["method"] == "POST" and uploads.is_multipart(scope):
            try:
                await uploads.read_multipart(
                    request,
                    max_files=files.MAX_FILES_PER_REQUEST,
                    max_file_bytes=files.MAX_FILE_BYTES,
                    spool_dir=storage_of(self.services).spool_dir,
                )
                response = await self.run(request)
            except GatewayError as exc:
                body = gateway_error_body("/graphql", exc, scope.get("state", {}).get("request_id"))
                response = Response(body, exc.http_status, media_type="application/json")
            except HTTPException as exc:
                code = _HTTP_CODES.get(exc.status_code, "BAD_REQUEST")
                body = error_body(
                    "/graphql", code, exc.reason, scope.get("state", {}).get("request_id")
                )
                response = Response(body, exc.status_code, media_type="application/json")
            finally:
                await request.close()  # the spooled parts
            await response(scope, receive, send)
            return
        pending = None
        if self.responses is not None and scope["method"] == "POST":
            pending = await self._cached(scope, request, send)
            if pending is None:
                return  # answered from the cache
        try:
            response = await self._run_json_post(request)
        except HTTPException as exc:
            state = scope.get("state", {})
            code = _HTTP_CODES.get(exc.status_code, "BAD_REQUEST")
            body = error_body("/graphql", code, exc.reason, state.get("request_id"))
            media = GRAPHQL_RESPONSE if _wants_graphql_response(request) else "application/json"
            headers = {"Allow": "GET, POST"} if exc.status_code == 405 else None
            response = Response(body, exc.status_code, headers=headers, media_type=media)
        if pending is not None and pending is not _NOT_CACHED:
            self._store(scope, pending, response)
        await response(scope, receive, send)

    async def _run_json_post(self, request: Request) -> Response:
        """strawberry's `run` for the request nearly every client sends (a JSON POST of
        one operation, no streaming), without the steps that cannot apply to it (socket
        and IDE checks, root value, request adapter, the GET and multipart readers, the
        content-type parse through the email package): together they were a tenth of a
        cheap request. Anything else (GET, batches, multipart, streaming) is `run`."""
        media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if (
            request.method != "POST"
            or media != "application/json"
            or self._get_stream_transport_from_headers(request.headers) is not None
        ):
            return await self.run(request)  # type: ignore[return-value]
        data = self.parse_json(await request.body())
        if not isinstance(data, dict):
            return await self.run(request)  # type: ignore[return-value]  # a batch
        operation = _single_request(data)
        sub_response = await self.get_sub_response(request)
        context = request_context(self.services, request, sub_response)
        result = await self.execute_single(request, _POST, sub_response, context, None, operation)
        response_data = await self.process_result(request, result)
        return self.create_response(response_data, sub_response)

    async def _cached(self, scope: Any, request: Request, send: Any) -> Any:
        """None when a cached answer was sent; else a Pending the extension may fill (or
        _NOT_CACHED when the request is not one the cache serves)."""
        state = scope.get("state")
        principal = state.get("principal") if state else None
        if principal is None:
            return _NOT_CACHED
        content_type = accept = ""
        for name, value in scope["headers"]:  # the first of each, as starlette's Headers
            if name == b"content-type" and not content_type:
                content_type = value.decode("latin-1")
            elif name == b"accept" and not accept:
                accept = value.decode("latin-1")
        if "application/json" not in content_type or (
            accept and self._get_stream_transport_from_headers({"accept": accept})
        ):
            return _NOT_CACHED
        body = await request.body()
        if len(body) > response_cache.MAX_ENTRY_BYTES or body.lstrip()[:1] == b"[":
            # Too large to keep, or a batch (one answer for several operations).
            return _NOT_CACHED
        key = (principal.key, principal.tenant_id, principal.role, body)
        assert self.responses is not None
        now = time.monotonic()
        hit = self.responses.get(key, now)
        if hit is None:
            pending = response_cache.Pending(key, self.responses.generation, now)
            state["response_cache"] = pending
            return pending
        media = GRAPHQL_RESPONSE if accept and prefers_graphql_response(accept) else None
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(hit.body)).encode()),
                    (b"content-type", (media or "application/json").encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": hit.body})
        record_cached_operation(hit.operation_name, time.monotonic() - now)
        return None

    def _store(self, scope: Any, pending: response_cache.Pending, response: Response) -> None:
        if pending.max_age is None or response.status_code != 200:
            return
        principal = scope["state"]["principal"]
        expires = pending.started + min(
            pending.max_age, self.services.settings.viewer_cache_seconds
        )
        profiles_end = viewer_cache.fresh_until(
            self.services, principal.user_id, principal.tenant_id
        )
        if profiles_end is not None:
            expires = min(expires, profiles_end)
        body = bytes(response.body)
        size = len(body) + len(pending.key[-1])  # the key ends with the request body
        answer = response_cache.CachedAnswer(
            body, expires, principal.user_id, pending.operation_name, size
        )
        assert self.responses is not None
        self.responses.put(pending.key, answer, pending.generation)

    async def process_result(self, request: Request, result: Any) -> Any:  # type: ignore[override]
        if result.errors:
            state = request.scope.get("state", {})
            result.errors = finish_errors(result.errors, state.get("request_id"))
        return await super().process_result(request, result)

    def encode_json(self, data: object) -> str:
        return encode_json(data)
