"""Coded error answers for HTTP, in GraphQL's shape on /graphql and a plain shape elsewhere."""

from __future__ import annotations

import json
from typing import Any

from gateway.errors import GatewayError

GRAPHQL_PREFIX = "/graphql"
GRAPHQL_RESPONSE = "application/graphql-response+json"


def prefers_graphql_response(accept: str) -> bool:
    """GraphQL over HTTP: answer `application/graphql-response+json` when the client
    accepts it, unless it lists `application/json` first."""
    pos = accept.find(GRAPHQL_RESPONSE)
    if pos == -1:
        return False
    json_pos = accept.find("application/json")
    return json_pos == -1 or pos < json_pos


def error_body(path: str, code: str, message: str, request_id: str | None, **extra: Any) -> bytes:
    extensions = {"code": code, **extra}
    if request_id:
        extensions["requestId"] = request_id
    if path.startswith(GRAPHQL_PREFIX):
        payload: dict[str, Any] = {"errors": [{"message": message, "extensions": extensions}]}
    else:
        payload = {"error": {"message": message, **extensions}}
    return json.dumps(payload, separators=(",", ":")).encode()


def gateway_error_body(path: str, error: GatewayError, request_id: str | None) -> bytes:
    return error_body(path, error.code, error.message, request_id, **error.extensions)


async def send_json(
    send: Any,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    media_type: str = "application/json",
) -> None:
    raw = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
    for k, v in (headers or {}).items():
        raw.append((k.lower().encode(), v.encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
