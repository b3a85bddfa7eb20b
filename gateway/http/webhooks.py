"""`POST /webhooks/{provider}` and `POST /webhooks/{provider}/{token}`: incoming webhooks.

The raw body is read up to `WEBHOOK_MAX_BODY_BYTES` (413 beyond), handed with the
headers to `resolvers.webhooks_in.receive` (verify, store in the inbox, queue the job),
and answered 200 only once the event is stored. Errors are coded JSON: 404 unknown
provider or address, 401 bad signature (nothing stored), 400 unreadable payload, 429
over the rate limit: `RATE_LIMIT_WEBHOOKS` per identified source, and for unknown
addresses `RATE_LIMIT_ANONYMOUS` per client address. See `resolvers/webhooks_in.py` for
which secret applies.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.http.responses import gateway_error_body
from kit.errors import GatewayError, RateLimited
from resolvers import webhooks_in, webhooks_out
from resolvers.context import Services
from resolvers.payments import paypal as paypal_payments
from resolvers.upstream import provider_registry

log = logging.getLogger("switchboard.webhooks.in")


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
    def public_url(request: Request) -> str:
        """The URL the sender addressed (PUBLIC_URL + path + query): what Twilio signs.
        Taken from settings, never from the request's Host, which a proxy may rewrite."""
        query = request.url.query
        return f"{settings.base_url}{request.url.path}" + (f"?{query}" if query else "")

    settings = services.settings
    webhooks_out.use_settings(settings)  # delivery jobs in this process sign and guard with these

    async def certificate(provider: str, url: str) -> bytes:
        """The certificate a vendor that signs with one names (PayPal's, only)."""
        if provider != "paypal":
            raise webhooks_in.SignatureInvalid("CERTIFICATE_UNAVAILABLE")
        return await paypal_payments.webhook_certificate(settings, provider_registry(services), url)

    async def receive(request: Request) -> Response:
        provider = request.path_params["provider"]
        token = request.path_params.get("token")
        state = request.scope.get("state", {})
        budget: dict[str, str] = {}  # the X-RateLimit-* headers of the budget counted

        async def throttle(source_key: str | None) -> None:
            if not settings.rate_limit_enabled:
                return
            if source_key is None:
                spec = settings.rate_limit_anonymous
                identity: tuple[str, ...] = ("webhooks:unknown", str(state.get("client_ip")))
            else:
                spec, identity = settings.rate_limit_webhooks, ("webhooks", provider, source_key)
            try:
                decision = await services.limiter.hit(spec, *identity)
            except Exception:
                log.error("rate limiter unavailable; webhook let through", exc_info=True)
                return
            budget.update(decision.headers())
            if not decision.allowed:
                raise RateLimited(decision.retry_after, "Rate limit exceeded.")

        try:
            body = await _read_body(request, settings.webhook_max_body_bytes)
            received = await webhooks_in.receive(
                settings,
                provider,
                token,
                request.headers,
                body,
                throttle=throttle,
                sandbox_secrets=services.sandbox_webhook_secrets,
                url=public_url(request),
                certificates=certificate,
            )
        except GatewayError as exc:
            headers = dict(budget)
            if isinstance(exc, RateLimited):
                headers["Retry-After"] = str(exc.retry_after)
            return Response(
                gateway_error_body(request.url.path, exc, state.get("request_id")),
                status_code=exc.http_status,
                media_type="application/json",
                headers=headers,
            )
        if received.answer is not None or received.inbox is None:  # a vendor's handshake
            return JSONResponse(received.answer or {}, headers=budget)
        return JSONResponse(
            {
                "received": True,
                "eventId": received.inbox.event_id,
                "duplicate": received.duplicate,
            },
            headers=budget,
        )

    return [
        Route("/webhooks/{provider}", receive, methods=["POST"]),
        Route("/webhooks/{provider}/{token}", receive, methods=["POST"]),
    ]
