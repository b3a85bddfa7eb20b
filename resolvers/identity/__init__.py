"""Sign-in with Google or GitHub, and the accounts linked to a user.

The flow (routes in gateway/http/identity.py, the same functions behind them):

1. `GET /auth/{provider}/start` — `start_sign_in`: a new state, PKCE verifier and nonce,
   kept server-side (`OAuthFlow`) and bound to the browser by a cookie; the browser is
   sent to the provider.
2. `GET /auth/{provider}/callback` — `finish_sign_in`: the state is used up (once, from
   the browser that started it, within OAUTH_FLOW_SECONDS), the code is redeemed with the
   verifier, the identity checked; the person's user is found or made, and the browser
   goes to the front end with a one-time code in the URL's fragment — never a token.
3. `exchangeLoginCode` — `exchange_login_code`: the code, once and within
   LOGIN_CODE_SECONDS, becomes the usual access and refresh tokens.

Who the person is: the linked account (provider + the provider's subject id) when there
is one. Otherwise an existing user with the same email is linked only when the provider
says the email is verified (an unverified email would let anyone who types it at the
provider into someone else's account); a new person becomes a new user, with an
organization of their own, on a verified email only.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, Conflict, GatewayError, NotFound, Unauthenticated
from kit.roles import Role
from kit.security import hash_token, new_token, tokens_equal
from kit.settings import Settings
from kit.ssrf import UnsafeDestination, check_url, refusal_in
from kit.vault import vault_for
from models.accounts import User
from models.identity import LinkedAccount, LoginCode, OAuthFlow, SsoConnection
from models.members import Membership
from models.tenants import Tenant
from providers import oauth
from providers.errors import ProviderError
from providers.oauth import Identity, Secrets, SignInRefused
from resolvers.accounts import AuthResult, check_sso_policy, start_session, throttle
from resolvers.context import Context
from resolvers.operations import PUBLIC, SIGNED_IN, operation
from resolvers.upstream import provider_registry

log = logging.getLogger("switchboard.identity")

PROVIDERS = ("google", "github")
SSO = "sso"  # the callback of every organization's own identity provider
CALLBACK_PATH = "/auth/{provider}/callback"
LOGIN_CODE_PREFIX = "slc_"


class ProviderUnavailable(GatewayError):
    code = "OAUTH_PROVIDER_UNAVAILABLE"
    http_status = 404


@dataclass(frozen=True)
class Setup:
    """Where and as whom the gateway talks to one provider."""

    provider: str
    client_id: str
    client_secret: str
    issuer: str = ""  # Google
    base_url: str = ""  # GitHub
    api_url: str = ""  # GitHub


def _sandbox_secret(settings: Settings, provider: str) -> str:
    key = settings.vault_keys[0].encode()
    return hmac.new(key, f"switchboard sandbox oauth: {provider}".encode(), "sha256").hexdigest()


def setup_for(settings: Settings, provider: str) -> Setup:
    """The provider's client settings; with none and sandboxes on, its emulator's."""
    sandbox = f"{settings.base_url}/sandbox/{provider}"
    if provider == "google":
        if settings.google_client_id and settings.google_client_secret is not None:
            return Setup(
                provider,
                settings.google_client_id,
                settings.google_client_secret.get_secret_value(),
                issuer=settings.google_issuer.rstrip("/"),
            )
        if settings.sandboxes_enabled:
            return Setup(
                provider, "switchboard-sandbox", _sandbox_secret(settings, provider), issuer=sandbox
            )
    elif provider == "github":
        if settings.github_client_id and settings.github_client_secret is not None:
            return Setup(
                provider,
                settings.github_client_id,
                settings.github_client_secret.get_secret_value(),
                base_url=settings.github_base_url,
                api_url=settings.github_api_url,
            )
        if settings.sandboxes_enabled:
            return Setup(
                provider,
                "switchboard-sandbox",
                _sandbox_secret(settings, provider),
                base_url=sandbox,
                api_url=f"{sandbox}/api",
            )
    raise ProviderUnavailable(f"Sign-in with {provider!r} is not available here.")


def callback_url(settings: Settings, provider: str) -> str:
    return settings.base_url + CALLBACK_PATH.format(provider=provider)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# 1. start ------------------------------------------------------------------------------


async def start_sign_in(
    ctx: Context, provider: str, browser_secret: str, hint: str | None = None
) -> str:
    """Record a new sign-in and answer the provider's authorization URL to send the
    browser to; `browser_secret` is what the caller put in the browser's cookie."""
    setup = setup_for(ctx.settings, provider)
    await throttle(ctx, "oauth-start", ctx.client_ip, ctx.settings.login_attempts_per_address)
    flow = Secrets.new()
    await OAuthFlow.create(
        provider=provider,
        state_hash=hash_token(flow.state),
        browser_hash=hash_token(browser_secret),
        verifier=flow.verifier,
        nonce=flow.nonce,
        expires_at=_now() + dt.timedelta(seconds=ctx.settings.oauth_flow_seconds),
    )
    redirect_uri = callback_url(ctx.settings, provider)
    hint = (hint or "").strip()[:320] or None
    if provider == "google":
        http = provider_registry(ctx.services).http("google")
        return await oauth.oidc_authorize_url(
            http,
            issuer=setup.issuer,
            client_id=setup.client_id,
            redirect_uri=redirect_uri,
            secrets=flow,
            login_hint=hint,
            prompt="select_account",
        )
    return oauth.github_authorize_url(
        base_url=setup.base_url,
        client_id=setup.client_id,
        redirect_uri=redirect_uri,
        secrets=flow,
        login=hint,
    )


# 2. callback ---------------------------------------------------------------------------


async def finish_sign_in(
    ctx: Context,
    provider: str,
    *,
    state: str,
    code: str,
    error: str,
    browser_secret: str,
) -> str:
    """Check the callback, redeem its code and answer a one-time login code. Raises
    SignInRefused (its `code` says why) or a GatewayError."""
    claimed = await OAuthFlow.filter(
        provider=provider, state_hash=hash_token(state or ""), used_at=None
    ).update(used_at=_now())
    flow = await OAuthFlow.get_or_none(state_hash=hash_token(state or "")) if claimed else None
    if flow is None or flow.expires_at < _now():
        raise SignInRefused("OAUTH_STATE_INVALID", "This sign-in is unknown, used or expired.")
    if not browser_secret or not tokens_equal(flow.browser_hash, hash_token(browser_secret)):
        raise SignInRefused("OAUTH_STATE_INVALID", "This sign-in began in another browser.")
    if error or not code:
        raise SignInRefused("OAUTH_DENIED", "The sign-in was cancelled at the provider.")
    secrets_ = Secrets(state=state, verifier=flow.verifier, nonce=flow.nonce)
    if provider == SSO:
        return await _finish_sso(ctx, flow, code[:2048], secrets_)
    setup = setup_for(ctx.settings, provider)
    http = provider_registry(ctx.services).http(provider)
    common = {
        "client_id": setup.client_id,
        "client_secret": setup.client_secret,
        "code": code[:2048],
        "redirect_uri": callback_url(ctx.settings, provider),
        "secrets": secrets_,
    }
    identity: Identity
    if provider == "google":
        identity = await oauth.oidc_identity(http, issuer=setup.issuer, **common)  # type: ignore[arg-type]
    else:
        identity = await oauth.github_identity(
            http,
            base_url=setup.base_url,
            api_url=setup.api_url,
            **common,  # type: ignore[arg-type]
        )
    return await _login_code(ctx, await user_for(identity), tenant_id=None)


async def _login_code(ctx: Context, user: User, *, tenant_id: int | None) -> str:
    login_code = new_token(LOGIN_CODE_PREFIX)
    await LoginCode.create(
        user_id=user.id,
        tenant_id=tenant_id,
        code_hash=hash_token(login_code),
        expires_at=_now() + dt.timedelta(seconds=ctx.settings.login_code_seconds),
    )
    return login_code


async def user_for(identity: Identity, *, organization: bool = True) -> User:
    """The user `identity` signs in as: linked, linked now (verified email), or new (with
    an organization of their own unless `organization` is False)."""
    for attempt in range(2):  # a racing first sign-in of the same person wins once
        linked = await LinkedAccount.get_or_none(
            provider=identity.provider, subject=identity.subject
        )
        if linked is not None:
            user = await User.get(id=linked.user_id)
            if not user.is_active:
                raise SignInRefused("ACCOUNT_DISABLED", "This account is disabled.")
            await LinkedAccount.filter(id=linked.id).update(last_used_at=_now())
            return user
        if not identity.email_verified:
            raise SignInRefused(
                "OAUTH_EMAIL_UNVERIFIED",
                f"Your {identity.provider} account's email address is not verified.",
            )
        try:
            return await _link_or_create(identity, organization=organization)
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


async def _link_or_create(identity: Identity, *, organization: bool = True) -> User:
    async with in_transaction():
        user = await User.get_or_none(email=identity.email)
        if user is None and not organization:
            user = await User.create(
                email=identity.email,
                name=identity.name[:200],
                password_hash="",
                email_verified_at=_now(),
            )
        elif user is None:
            user = await User.create(
                email=identity.email,
                name=identity.name[:200],
                password_hash="",  # no password: signs in through linked accounts only
                email_verified_at=_now(),
            )
            name = f"{identity.name or identity.email.split('@')[0]}'s organization"[:200]
            tenant = await Tenant.create(name=name, slug=f"org-{secrets.token_hex(6)}")
            await Membership.create(user_id=user.id, tenant_id=tenant.id, role=Role.OWNER.value)
        elif not user.is_active:
            raise SignInRefused("ACCOUNT_DISABLED", "This account is disabled.")
        elif user.email_verified_at is None:
            user.email_verified_at = _now()  # the provider verified it
            await user.save(update_fields=["email_verified_at"])
        await LinkedAccount.create(
            user_id=user.id,
            provider=identity.provider,
            subject=identity.subject,
            email=identity.email,
            last_used_at=_now(),
        )
    log.info("account linked", extra={"user_id": user.id, "provider": identity.provider})
    return user


# 3. exchange ---------------------------------------------------------------------------


@operation(PUBLIC)
async def exchange_login_code(ctx: Context, code: str) -> AuthResult:
    await throttle(ctx, "login-addr", ctx.client_ip, ctx.settings.login_attempts_per_address)
    digest = hash_token((code or "")[:200])
    claimed = await LoginCode.filter(code_hash=digest, used_at=None, expires_at__gt=_now()).update(
        used_at=_now()
    )
    row = await LoginCode.get_or_none(code_hash=digest) if claimed else None
    if row is None:
        raise Unauthenticated("This sign-in code is unknown, used or expired.")
    user = await User.get(id=row.user_id)
    if not user.is_active:
        raise Unauthenticated("This account is disabled.")
    memberships = Membership.filter(user_id=user.id)
    if row.tenant_id is not None:
        memberships = memberships.filter(tenant_id=row.tenant_id)
    membership = await memberships.order_by("created_at", "id").first()
    if membership is None:
        raise Unauthenticated("This account belongs to no organization.")
    await check_sso_policy(membership, via_sso=row.tenant_id is not None)
    tenant = await Tenant.get(id=membership.tenant_id)
    return await start_session(ctx, user, tenant, membership)


# linked accounts -----------------------------------------------------------------------


@operation(SIGNED_IN)
async def linked_accounts(ctx: Context) -> list[LinkedAccount]:
    principal = ctx.require_principal()
    return await LinkedAccount.filter(user_id=principal.user_id).order_by("created_at", "id")


@operation(SIGNED_IN)
async def unlink_account(ctx: Context, account_id: int) -> LinkedAccount:
    """Remove a linked account; never the user's last way to sign in."""
    principal = ctx.require_principal()
    async with in_transaction():
        # Both of a user's unlinks serialize on the user's row (PostgreSQL; SQLite's
        # transactions are one at a time anyway): two racing unlinks cannot remove both.
        user = await User.select_for_update().get(id=principal.user_id)
        row = await LinkedAccount.get_or_none(id=account_id, user_id=user.id)
        if row is None:
            raise NotFound("Linked account not found.")
        others = await LinkedAccount.filter(user_id=user.id).exclude(id=row.id).count()
        if not user.password_hash and others == 0:
            raise Conflict(
                "This is your only way to sign in: set a password (reset it by email) or link "
                "another account first.",
                details={"id": "is the last way to sign in"},
            )
        await row.delete()
    return row


# single sign-on ------------------------------------------------------------------------


def _sso_callback(settings: Settings) -> str:
    return callback_url(settings, SSO)


def _sso_secret(ctx: Context, row: SsoConnection) -> str:
    return vault_for(ctx.settings.vault_keys).decrypt(row.client_secret)


async def sso_tenant(tenant_id: int) -> Tenant:
    return await Tenant.get(id=tenant_id)


@operation("sso:manage")
async def get_sso(ctx: Context) -> SsoConnection | None:
    principal = ctx.require("sso:manage")
    return await SsoConnection.get_or_none(tenant_id=principal.tenant_id)


@operation("sso:manage")
async def configure_sso(
    ctx: Context,
    *,
    issuer: str,
    client_id: str,
    client_secret: str | None,
    required: bool,
    default_role: Role,
) -> SsoConnection:
    """Set the organization's OpenID Connect provider; its discovery document is fetched
    (through the outbound address guard) before anything is saved."""
    principal = ctx.require("sso:manage")
    issuer = (issuer or "").strip().rstrip("/")
    client_id = (client_id or "").strip()
    problems: dict[str, str] = {}
    if not 0 < len(issuer) <= 500:
        problems["issuer"] = "must be a URL of at most 500 characters"
    if not 0 < len(client_id) <= 300:
        problems["clientId"] = "must be 1 to 300 characters"
    if client_secret is not None and not 0 < len(client_secret) <= 1000:
        problems["clientSecret"] = "must be 1 to 1000 characters"
    if default_role == Role.OWNER:
        problems["defaultRole"] = "people joining through single sign-on cannot be OWNER"
    if problems:
        raise BadUserInput("Invalid single sign-on settings.", details=problems)
    existing = await SsoConnection.get_or_none(tenant_id=principal.tenant_id)
    if client_secret is None and existing is None:
        raise BadUserInput(
            "clientSecret: required", details={"clientSecret": "required the first time"}
        )
    try:
        check_url(issuer, ctx.settings.outbound_policy())
        http = provider_registry(ctx.services).http("oidc")
        await oauth.oidc_discovery(http, issuer, guard=True)
    except UnsafeDestination as exc:
        raise exc.for_field("issuer") from None
    except ProviderError as exc:
        refusal = refusal_in(exc)
        if refusal is not None:
            raise refusal.for_field("issuer") from None
        raise BadUserInput(
            f"issuer: its OpenID configuration could not be read ({exc})",
            details={"issuer": "no valid OpenID Connect discovery document"},
        ) from None
    vault = vault_for(ctx.settings.vault_keys)
    secret = vault.encrypt(client_secret) if client_secret is not None else None
    values: dict[str, Any] = {
        "issuer": issuer,
        "client_id": client_id,
        "required": required,
        "default_role": default_role.value,
    }
    if existing is None:
        assert secret is not None
        return await SsoConnection.create(
            tenant_id=principal.tenant_id, client_secret=secret, **values
        )
    if secret is not None:
        values["client_secret"] = secret
    await SsoConnection.filter(id=existing.id).update(**values)
    return await SsoConnection.get(id=existing.id)


@operation("sso:manage")
async def remove_sso(ctx: Context) -> bool:
    principal = ctx.require("sso:manage")
    return bool(await SsoConnection.filter(tenant_id=principal.tenant_id).delete())


async def start_sso(
    ctx: Context, organization_slug: str, browser_secret: str, hint: str | None = None
) -> str:
    """`start_sign_in` through an organization's own identity provider."""
    await throttle(ctx, "oauth-start", ctx.client_ip, ctx.settings.login_attempts_per_address)
    tenant = await Tenant.get_or_none(slug=(organization_slug or "")[:100])
    row = None if tenant is None else await SsoConnection.get_or_none(tenant_id=tenant.id)
    if row is None:
        raise ProviderUnavailable("This organization has no single sign-on.")
    flow = Secrets.new()
    await OAuthFlow.create(
        provider=SSO,
        tenant_id=row.tenant_id,
        state_hash=hash_token(flow.state),
        browser_hash=hash_token(browser_secret),
        verifier=flow.verifier,
        nonce=flow.nonce,
        expires_at=_now() + dt.timedelta(seconds=ctx.settings.oauth_flow_seconds),
    )
    return await oauth.oidc_authorize_url(
        provider_registry(ctx.services).http("oidc"),
        issuer=row.issuer,
        client_id=row.client_id,
        redirect_uri=_sso_callback(ctx.settings),
        secrets=flow,
        login_hint=(hint or "").strip()[:320] or None,
        guard=True,
    )


async def _finish_sso(ctx: Context, flow: OAuthFlow, code: str, secrets_: Secrets) -> str:
    row = await SsoConnection.get_or_none(tenant_id=flow.tenant_id)
    if row is None or flow.tenant_id is None:
        raise SignInRefused("OAUTH_PROVIDER_UNAVAILABLE", "Single sign-on was removed.")
    identity = await oauth.oidc_identity(
        provider_registry(ctx.services).http("oidc"),
        issuer=row.issuer,
        client_id=row.client_id,
        client_secret=_sso_secret(ctx, row),
        code=code,
        redirect_uri=_sso_callback(ctx.settings),
        secrets=secrets_,
        guard=True,
        provider=f"{SSO}:{row.tenant_id}",
    )
    user = await user_for(identity, organization=False)
    try:
        await Membership.get_or_create(
            user_id=user.id, tenant_id=row.tenant_id, defaults={"role": row.default_role}
        )
    except IntegrityError:
        pass  # a racing sign-in of the same person made it
    return await _login_code(ctx, user, tenant_id=row.tenant_id)


__all__ = [
    "PROVIDERS",
    "ProviderUnavailable",
    "SignInRefused",
    "exchange_login_code",
    "finish_sign_in",
    "linked_accounts",
    "start_sign_in",
    "unlink_account",
]
