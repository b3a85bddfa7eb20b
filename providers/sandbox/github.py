"""GitHub's OAuth app flow and the two API calls sign-in needs, emulated.

- `GET /login/oauth/authorize` — as GitHub's (with PKCE's S256 `code_challenge`); no
  browser: the person is the one named by `login` (GitHub's "suggest an account"
  parameter, here an email), created on first use with a verified primary email, or set
  up with `POST /_sandbox/users` `{"email", "name", "email_verified", "deny"}`. Redirects
  to `redirect_uri` with `code` and `state`, or `error=access_denied`.
- `POST /login/oauth/access_token` — form or JSON body; with `Accept: application/json`
  the answer is JSON (`access_token`, `token_type`, `scope`), else form-encoded, and a
  bad code is GitHub's 200 with `{"error": "bad_verification_code"}`.
- `GET /api/user` and `GET /api/user/emails` (the REST API, served here under `/api`:
  set `GITHUB_API_URL` to `…/sandbox/github/api`) with `Authorization: Bearer` the
  token; the emails list carries `primary`, `verified` and `visibility`.
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from providers.sandbox.base import bearer
from providers.sandbox.google import OAuthSandbox, Person, client_credentials


class GitHubSandbox(OAuthSandbox):
    provider = "github"

    def __init__(self) -> None:
        super().__init__()
        self.tokens: dict[str, Person] = {}

    def reset_state(self) -> None:
        super().reset_state()
        self.tokens.clear()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/login/oauth/authorize", self.authorize),
            Route("/login/oauth/access_token", self.access_token, methods=["POST"]),
            Route("/api/user", self.user),
            Route("/api/user/emails", self.emails),
        ]

    def error_response(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        body = {
            "message": message or code or "Error",
            "documentation_url": "https://docs.github.com/rest",
        }
        return JSONResponse(body, status, headers=headers)

    async def authorize(self, request: Request) -> Response:
        query = dict(request.query_params)
        query.setdefault("response_type", "code")
        problem = self.authorize_error(query)
        if problem is not None:
            return self.error_response(400, message=f"Bad authorization request: {problem}")
        return self.send_back(self.person(query.get("login", "")), query, "")

    async def access_token(self, request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("application/json"):
            form: Any = json.loads(await request.body() or b"{}")
        else:
            form = await request.form()
        client_id, secret = client_credentials(request, form)
        form = {**dict(form), "grant_type": "authorization_code"}
        if not client_id or not secret:
            answer: dict[str, str] = {"error": "incorrect_client_credentials"}
        else:
            grant = self.redeem(form, client_id)
            if isinstance(grant, str):
                answer = {"error": "bad_verification_code"}
            else:
                token = "gho_" + secrets.token_urlsafe(27)
                self.tokens[token] = grant.person
                answer = {"access_token": token, "token_type": "bearer", "scope": grant.scope}
        if "json" in request.headers.get("accept", ""):
            return JSONResponse(answer)
        return Response(urlencode(answer), media_type="application/x-www-form-urlencoded")

    def _person(self, request: Request) -> Person | None:
        return self.tokens.get(bearer(request) or "")

    async def user(self, request: Request) -> Response:
        person = self._person(request)
        if person is None:
            return self.error_response(401, message="Bad credentials")
        return JSONResponse(
            {
                "login": person.email.split("@")[0],
                "id": int(person.sub) % 10**9,
                "name": person.name or None,
                "email": person.email if person.email_verified else None,
            }
        )

    async def emails(self, request: Request) -> Response:
        person = self._person(request)
        if person is None:
            return self.error_response(401, message="Bad credentials")
        return JSONResponse(
            [
                {
                    "email": person.email,
                    "primary": True,
                    "verified": person.email_verified,
                    "visibility": "private",
                },
                {
                    "email": f"{person.sub}+noreply@users.noreply.github.com",
                    "primary": False,
                    "verified": True,
                    "visibility": None,
                },
            ]
        )


def create_app() -> GitHubSandbox:
    return GitHubSandbox()
