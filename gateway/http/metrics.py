"""/metrics in Prometheus text format, and the per-request HTTP counters behind it.

`observe_request` is called by the gateway middleware once per HTTP request; it
labels by the matched route's path template (`/webhooks/{provider}`), never by the
raw path, so label values stay few. /metrics is open to loopback callers (a
sidecar scraper) and, when `METRICS_TOKEN` is set, to `Authorization: Bearer
<METRICS_TOKEN>`; anyone else gets 401/403.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route

from gateway.http.responses import error_body
from kit import metrics
from resolvers.context import Services

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
SECRET_PATH_PARAMS = frozenset({"token"})


def route_path(scope: dict[str, Any]) -> str:
    """The path template of the route that handled the request."""
    route = scope.get("route")
    if route is not None and getattr(route, "path", None) is not None:
        # Inside a Mount, the route's path is relative to the mount point.
        root = scope.get("root_path", "")
        prefix = root[len(scope["app_root_path"]) :] if "app_root_path" in scope else ""
        return f"{prefix}{route.path}" or "/"
    # Refused before routing (rate limit, body size, bad token): match it now.
    app = scope.get("app")
    for candidate in getattr(app, "routes", ()):
        if not isinstance(candidate, Route | Mount):
            continue
        match, _ = candidate.matches({**scope, "type": "http"})
        if match is not Match.NONE:
            return candidate.path + ("/…" if isinstance(candidate, Mount) else "")
    return UNMATCHED


def loggable_path(scope: dict[str, Any]) -> str:
    """The path for a log line: the route template with its parameters filled in, except
    a secret one (`{token}`, the webhook source token), which stays a placeholder."""
    template = route_path(scope)
    for name, value in (scope.get("path_params") or {}).items():
        if name not in SECRET_PATH_PARAMS:
            template = template.replace("{" + name + "}", str(value))
    return template


def observe_request(scope: dict[str, Any], status: int, seconds: float) -> None:
    """Count one HTTP request by route template, method and status class."""
    method = scope.get("method", "GET")
    method = method if method in _METHODS else "OTHER"
    route = route_path(scope)
    status_class = f"{status // 100}xx"
    key = (route, method, status_class)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (
            metrics.http_requests.labels(route, method, status_class),
            metrics.http_latency.labels(route, method),
        )
    children[0].inc()
    children[1].observe(seconds)
    if status == 429:
        state = scope.get("state", {})
        budget = (
            "webhooks"
            if route.startswith("/webhooks")
            else "principal"
            if state.get("principal") is not None
            else "address"
        )
        metrics.rate_limit_rejections.labels(budget).inc()


def _is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def routes(services: Services) -> list[BaseRoute]:
    settings = services.settings

    async def serve_metrics(request: Request) -> Response:
        state = request.scope.get("state", {})
        request_id = state.get("request_id")
        # client_ip honours X-Forwarded-For only from TRUSTED_PROXIES, so a request
        # relayed by a local proxy is not mistaken for a loopback scraper.
        address = state.get("client_ip") or (request.client.host if request.client else None)
        if not _is_loopback(address):
            expected = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
            header = request.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if not expected:
                body = error_body(
                    "/metrics", "FORBIDDEN", "Metrics are served to loopback only.", request_id
                )
                return Response(body, 403, media_type="application/json")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), expected.encode()
            ):
                body = error_body(
                    "/metrics", "UNAUTHENTICATED", "Send Authorization: Bearer <METRICS_TOKEN>.",
                    request_id,
                )  # fmt: skip
                return Response(
                    body, 401, media_type="application/json", headers={"WWW-Authenticate": "Bearer"}
                )
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", serve_metrics, methods=["GET"])]
