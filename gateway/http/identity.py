"""`/auth/{provider}/start` and `/auth/{provider}/callback`: sign-in with Google or GitHub;
`/auth/sso/{organization slug}/start` and `/auth/sso/callback`: through an organization's
own OpenID Connect provider (resolvers/identity/ has the flow).

The start sets a cookie that binds the sign-in to this browser (HttpOnly, SameSite=Lax so
it comes back with the provider's top-level redirect, limited to `/auth/`); the callback
needs it, so a sign-in link someone else started cannot sign this browser in. The callback
never puts tokens in a URL: the browser goes to `{FRONTEND_URL}/auth/callback` with
`#code=…` (a one-time code for `exchangeLoginCode`) or `#error=CODE`; fragments reach
neither the front end's server nor its logs.
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.http.middleware import request_context
from gateway.http.responses import error_body, gateway_error_body
from kit.errors import GatewayError
from providers.errors import ProviderError
from providers.oauth import SignInRefused
from resolvers import identity
from resolvers.context import Services
from resolvers.identity import connections

log = logging.getLogger("switchboard.identity")

COOKIE = "sb_oauth"
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _provider(request: Request, *, callback: bool = False) -> str:
    provider = str(request.path_params["provider"])
    if provider not in identity.PROVIDERS and not (callback and provider == identity.SSO):
        raise identity.ProviderUnavailable(f"There is no sign-in with {provider!r}.")
    return provider


def _to_front_end(services: Services, page: str = "auth", **fragment: str) -> RedirectResponse:
    url = f"{services.settings.app_url}/{page}/callback#{urlencode(fragment)}"
    response = RedirectResponse(url, 302, headers=NO_STORE)
    response.delete_cookie(COOKIE, path="/auth/")
    return response


def routes(services: Services) -> list[BaseRoute]:
    async def start(request: Request) -> Response:
        try:
            browser = secrets.token_urlsafe(32)
            hint = request.query_params.get("login_hint")
            ctx = request_context(services, request)
            if "organization" in request.path_params:
                organization = str(request.path_params["organization"])
                url = await identity.start_sso(ctx, organization, browser, hint=hint)
            else:
                url = await identity.start_sign_in(ctx, _provider(request), browser, hint=hint)
        except GatewayError as exc:
            body = gateway_error_body(request.url.path, exc, None)
            return Response(body, exc.http_status, media_type="application/json")
        except ProviderError as exc:
            log.warning("sign-in start failed", extra={"error": str(exc)})
            message = "The sign-in provider is unavailable; try again."
            body = error_body(request.url.path, "UPSTREAM_UNAVAILABLE", message, None)
            return Response(body, 503, media_type="application/json")
        response = RedirectResponse(url, 302, headers=NO_STORE)
        response.set_cookie(
            COOKIE,
            browser,
            max_age=services.settings.oauth_flow_seconds,
            path="/auth/",
            httponly=True,
            secure=services.settings.base_url.startswith("https://"),
            samesite="lax",
        )
        return response

    async def callback(request: Request) -> Response:
        query = request.query_params
        try:
            provider = _provider(request, callback=True)
            code = await identity.finish_sign_in(
                request_context(services, request),
                provider,
                state=query.get("state", ""),
                code=query.get("code", ""),
                error=query.get("error", ""),
                browser_secret=request.cookies.get(COOKIE, ""),
            )
        except SignInRefused as exc:
            log.info("sign-in refused", extra={"reason": exc.code})
            return _to_front_end(services, error=exc.code)
        except GatewayError as exc:
            return _to_front_end(services, error=exc.code)
        except ProviderError as exc:
            log.warning("sign-in callback failed", extra={"error": str(exc)})
            return _to_front_end(services, error="OAUTH_PROVIDER_UNAVAILABLE")
        return _to_front_end(services, code=code)

    async def connected(request: Request) -> Response:
        """Back from the provider after connecting an account (identity/connections.py)."""
        query = request.query_params
        provider = str(request.path_params["provider"])
        try:
            await connections.finish_connect(
                request_context(services, request),
                provider,
                state=query.get("state", ""),
                code=query.get("code", ""),
                error=query.get("error", ""),
            )
        except SignInRefused as exc:
            log.info("connection refused", extra={"reason": exc.code})
            return _to_front_end(services, "connections", error=exc.code)
        except GatewayError as exc:
            return _to_front_end(services, "connections", error=exc.code)
        except ProviderError as exc:
            log.warning("connection callback failed", extra={"error": str(exc)})
            return _to_front_end(services, "connections", error="OAUTH_PROVIDER_UNAVAILABLE")
        return _to_front_end(services, "connections", connected=provider.upper())

    return [
        Route("/connect/{provider}/callback", connected, methods=["GET"]),
        Route("/auth/sso/{organization}/start", start, methods=["GET"]),
        Route("/auth/{provider}/start", start, methods=["GET"]),
        Route("/auth/{provider}/callback", callback, methods=["GET"]),
    ]
