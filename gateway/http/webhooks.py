"""`POST /webhooks/{provider}` and `POST /webhooks/{provider}/{token}`: incoming webhooks.

The raw body is read up to `WEBHOOK_MAX_BODY_BYTES` (413 beyond), handed with the
headers to `resolvers.webhooks_in.receive` (verify, store in the inbox, queue the job),
and answered 200 only once the event is stored. Errors are coded JSON: 404 unknown
provider or address, 401 bad signature (nothing stored), 400 unreadable payload. See
`resolvers/webhooks_in.py` for which secret applies.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.errors import GatewayError
from gateway.http.responses import gateway_error_body
from resolvers import webhooks_in, webhooks_out
from resolvers.context import Services


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise webhooks_in.PayloadTooLarge(
            f"Webhook body is larger than {limit} bytes.", limit=limit
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise webhooks_in.PayloadTooLarge(
                f"Webhook body is larger than {limit} bytes.", limit=limit
            )
        chunks.append(chunk)
    return b"".join(chunks)


def routes(services: Services) -> list[BaseRoute]:
    settings = services.settings
    webhooks_out.use_settings(settings)  # delivery jobs in this process sign and guard with these

    async def receive(request: Request) -> Response:
        provider = request.path_params["provider"]
        token = request.path_params.get("token")
        try:
            body = await _read_body(request, settings.webhook_max_body_bytes)
            received = await webhooks_in.receive(settings, provider, token, request.headers, body)
        except GatewayError as exc:
            request_id = request.scope.get("state", {}).get("request_id")
            return Response(
                gateway_error_body(request.url.path, exc, request_id),
                status_code=exc.http_status,
                media_type="application/json",
            )
        return JSONResponse(
            {
                "received": True,
                "eventId": received.inbox.event_id,
                "duplicate": received.duplicate,
            }
        )

    return [
        Route("/webhooks/{provider}", receive, methods=["POST"]),
        Route("/webhooks/{provider}/{token}", receive, methods=["POST"]),
    ]
