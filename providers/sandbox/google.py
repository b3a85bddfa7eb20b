"""Google's OpenID Connect authorization server, emulated (sign-in with Google).

Paths and shapes as Google's (all relative to the issuer, which is where this app is
served, e.g. `{PUBLIC_URL}/sandbox/google`):

- `GET /.well-known/openid-configuration` — the discovery document.
- `GET /o/oauth2/v2/auth` — the authorization endpoint. There is no browser and no
  consent screen: the person signing in is the one named by `login_hint` (created on
  first use, email verified), or one set up with `POST /_sandbox/users`
  `{"email", "name", "email_verified"}`. Answers 302 to `redirect_uri` with `code` and
  `state`, or Google's `error=` redirect (`access_denied` when the hint is a user marked
  `"deny": true`). Requires `response_type=code`, a `client_id`, a `redirect_uri`, and
  PKCE's `code_challenge` with `code_challenge_method=S256`.
- `POST /token` — `grant_type=authorization_code` (form-encoded; client credentials in
  the body or HTTP Basic): the code once, within 10 minutes, for the same client and
  redirect URI, with the PKCE verifier whose S256 hash is the challenge; else Google's
  `{"error": "invalid_grant", ...}` 400. Answers `access_token`, `expires_in`,
  `token_type`, `scope` and an RS256 `id_token` (iss, aud, sub, email, email_verified,
  name, nonce, iat, exp) signed with the key published at
- `GET /oauth2/v3/certs` — the JSON Web Key Set.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from providers.sandbox.base import Sandbox

CODE_SECONDS = 600


@dataclass
class Person:
    email: str
    name: str = ""
    email_verified: bool = True
    deny: bool = False
    sub: str = field(default_factory=lambda: str(secrets.randbelow(10**20) + 10**20))


@dataclass
class Grant:
    person: Person
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    scope: str
    expires: float
    offline: bool = False  # `access_type=offline`: the code also brings a refresh token


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def client_credentials(request: Request, form: Any) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return user, password
        except (ValueError, UnicodeDecodeError):
            return "", ""
    return str(form.get("client_id") or ""), str(form.get("client_secret") or "")


class OAuthSandbox(Sandbox):
    """What the Google and GitHub emulators share: people, codes, PKCE."""

    def __init__(self) -> None:
        super().__init__()
        self.people: dict[str, Person] = {}
        self.grants: dict[str, Grant] = {}

    def reset_state(self) -> None:
        self.people.clear()
        self.grants.clear()

    def _control_routes(self) -> list[BaseRoute]:
        return [
            *super()._control_routes(),
            Route("/_sandbox/users", self.add_person, methods=["POST"]),
        ]

    async def add_person(self, request: Request) -> Response:
        data = await request.json()
        person = Person(
            email=str(data["email"]).lower(),
            name=str(data.get("name") or ""),
            email_verified=bool(data.get("email_verified", True)),
            deny=bool(data.get("deny", False)),
        )
        self.people[person.email] = person
        return JSONResponse({"sub": person.sub, "email": person.email})

    def person(self, hint: str) -> Person:
        hint = hint.strip().lower() or "someone@example.com"
        if hint not in self.people:
            self.people[hint] = Person(email=hint, name=hint.split("@")[0].title())
        return self.people[hint]

    def authorize_error(self, query: Any) -> str | None:
        if query.get("response_type") != "code":
            return "unsupported_response_type"
        if not query.get("client_id") or not query.get("redirect_uri"):
            return "invalid_request"
        if not query.get("code_challenge") or query.get("code_challenge_method") != "S256":
            return "invalid_request"
        return None

    def send_back(self, person: Person, query: Any, prefix: str) -> Response:
        """The redirect to the client's `redirect_uri`: a code (or access_denied), state."""
        answer: dict[str, str] = {}
        if person.deny:
            answer["error"] = "access_denied"
        else:
            answer["code"] = self.issue_code(person, query, prefix)
        if query.get("state"):
            answer["state"] = query["state"]
        return RedirectResponse(f"{query['redirect_uri']}?{urlencode(answer)}", 302)

    def issue_code(self, person: Person, query: Any, prefix: str = "4/") -> str:
        code = prefix + secrets.token_urlsafe(24)
        self.grants[code] = Grant(
            person=person,
            client_id=query["client_id"],
            redirect_uri=query["redirect_uri"],
            challenge=query["code_challenge"],
            nonce=query.get("nonce"),
            scope=query.get("scope", ""),
            expires=time.time() + CODE_SECONDS,
            offline=query.get("access_type") == "offline",
        )
        return code

    def redeem(self, form: Any, client_id: str) -> Grant | str:
        """The grant for the form's code (used up), or the OAuth error to answer."""
        if form.get("grant_type") != "authorization_code":
            return "unsupported_grant_type"
        grant = self.grants.pop(str(form.get("code") or ""), None)
        if grant is None or grant.expires < time.time():
            return "invalid_grant"
        if grant.client_id != client_id or grant.redirect_uri != form.get("redirect_uri"):
            return "invalid_grant"
        if s256(str(form.get("code_verifier") or "")) != grant.challenge:
            return "invalid_grant"
        return grant


@functools.cache
def _signing_key() -> tuple[rsa.RSAPrivateKey, str]:
    """One key per process, made when first needed (every app mounts this sandbox)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048), secrets.token_hex(8)


class GoogleSandbox(OAuthSandbox):
    provider = "google"

    @property
    def key(self) -> rsa.RSAPrivateKey:
        return _signing_key()[0]

    @property
    def kid(self) -> str:
        return _signing_key()[1]

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/.well-known/openid-configuration", self.discovery),
            Route("/o/oauth2/v2/auth", self.authorize),
            Route("/token", self.token, methods=["POST"]),
            Route("/oauth2/v3/certs", self.certs),
        ]

    def error_response(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        body = {"error": code or "server_error", "error_description": message or "Error"}
        return JSONResponse(body, status, headers=headers)

    def issuer(self, request: Request) -> str:
        return str(request.base_url).rstrip("/") + request.scope.get("root_path", "")

    async def discovery(self, request: Request) -> Response:
        issuer = self.issuer(request)
        return JSONResponse(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/o/oauth2/v2/auth",
                "token_endpoint": f"{issuer}/token",
                "jwks_uri": f"{issuer}/oauth2/v3/certs",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "code_challenge_methods_supported": ["plain", "S256"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
            }
        )

    async def certs(self, request: Request) -> Response:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return JSONResponse({"keys": [jwk]})

    async def authorize(self, request: Request) -> Response:
        query = request.query_params
        problem = self.authorize_error(query)
        if problem is not None:
            return self.error_response(400, code=problem, message="Bad authorization request")
        return self.send_back(self.person(query.get("login_hint", "")), query, "4/")

    async def token(self, request: Request) -> Response:
        form = await request.form()
        client_id, secret = client_credentials(request, form)
        if not client_id or not secret:
            return self.error_response(401, code="invalid_client", message="Unauthorized")
        grant = self.redeem(form, client_id)
        if isinstance(grant, str):
            return self.error_response(400, code=grant, message="Bad Request")
        return JSONResponse(self.token_answer(request, grant, client_id))

    def token_answer(self, request: Request, grant: Grant, client_id: str) -> dict[str, Any]:
        """The token endpoint's answer to a redeemed code."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer(request),
            "aud": client_id,
            "azp": client_id,
            "sub": grant.person.sub,
            "email": grant.person.email,
            "email_verified": grant.person.email_verified,
            "name": grant.person.name,
            "iat": now,
            "exp": now + 3600,
        }
        if grant.nonce:
            claims["nonce"] = grant.nonce
        id_token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        return {
            "access_token": "ya29." + secrets.token_urlsafe(32),
            "expires_in": 3599,
            "token_type": "Bearer",
            "scope": grant.scope,
            "id_token": id_token,
        }


def create_app() -> GoogleSandbox:
    return GoogleSandbox()
