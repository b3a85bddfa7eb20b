"""Accounts: registration, login, sessions (rotating refresh tokens), email tokens, tenants."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
import time
import uuid
from dataclasses import dataclass

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, Conflict, NotFound, Unauthenticated, require
from kit.roles import Role
from kit.security import (
    REFRESH_PREFIX,
    Principal,
    check_password_strength,
    hash_password,
    hash_token,
    issue_access_token,
    new_token,
    password_needs_rehash,
    verify_password,
)
from kit.text import normalize_email, one_line
from kit.ttl_cache import read_through
from models.accounts import EmailToken, RefreshToken, User
from models.identity import SsoConnection
from models.members import Membership
from models.tenants import Tenant
from resolvers import authority, mail, viewer_cache
from resolvers.context import Context
from resolvers.operations import PUBLIC, SIGNED_IN, operation
from resolvers.viewer_cache import TenantProfile, UserProfile

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"


@dataclass
class AuthResult:
    access_token: str
    expires_at: int
    refresh_token: str
    user: User
    tenant: Tenant
    role: Role


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]
    return slug or "org"


# Sessions --------------------------------------------------------------------


async def start_session(
    ctx: Context, user: User, tenant: Tenant, membership: Membership
) -> AuthResult:
    """A new refresh-token family and its first access token."""
    return await _issue(ctx, user, tenant, membership, family=uuid.uuid4().hex)


async def _issue(
    ctx: Context, user: User, tenant: Tenant, membership: Membership, family: str
) -> AuthResult:
    """Tokens for `membership`: the access token names it, so it dies with it."""
    settings = ctx.settings
    role = Role(membership.role)
    refresh = new_token(REFRESH_PREFIX)
    await RefreshToken.create(
        user_id=user.id,
        tenant_id=tenant.id,
        family=family,
        token_hash=hash_token(refresh),
        expires_at=now() + dt.timedelta(seconds=settings.refresh_token_ttl_seconds),
    )
    principal = Principal(
        user_id=user.id,
        tenant_id=tenant.id,
        role=role,
        session_family=family,
        membership_id=membership.id,
    )
    access, exp = issue_access_token(settings, principal)
    return AuthResult(access, exp, refresh, user, tenant, role)


async def revoke_family(family: str) -> None:
    await RefreshToken.filter(family=family, revoked_at=None).update(revoked_at=now())


async def revoke_user_sessions(user_id: int, tenant_id: int | None = None) -> None:
    qs = RefreshToken.filter(user_id=user_id, revoked_at=None)
    if tenant_id is not None:
        qs = qs.filter(tenant_id=tenant_id)
    await qs.update(revoked_at=now())


def _reused() -> Unauthenticated:
    return Unauthenticated(
        "Refresh token was already used; the session has been revoked.",
        reason="REFRESH_TOKEN_REUSED",
    )


async def _end_session(ctx: Context, user_id: int, family: str) -> None:
    """Revoke a family; its access tokens stop at their next request, everywhere."""
    await revoke_family(family)
    await authority.changed(ctx.services, user_id=user_id)


@operation(PUBLIC)
async def refresh_session(ctx: Context, refresh_token: str) -> AuthResult:
    """Rotate: the presented token is spent; presenting a spent one ends its session.

    One rule, concurrency included: a refresh token works once; a second use, even at the
    same moment as the first, revokes the whole session, the pair the first use got
    included (its refresh token is refused, its access token stops at its next request).
    """
    row = await RefreshToken.filter(token_hash=hash_token(refresh_token or "")).first()
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("Invalid refresh token.")
    if row.rotated_at is not None:
        await _end_session(ctx, row.user_id, row.family)
        raise _reused()
    if row.expires_at <= now():
        raise Unauthenticated("Refresh token expired.", reason="TOKEN_EXPIRED")
    # Conditional update: of two concurrent refreshes with one token, only one wins.
    claimed = await RefreshToken.filter(id=row.id, rotated_at=None, revoked_at=None).update(
        rotated_at=now()
    )
    if not claimed:
        await _end_session(ctx, row.user_id, row.family)
        raise _reused()
    membership = await Membership.filter(user_id=row.user_id, tenant_id=row.tenant_id).first()
    user = await User.filter(id=row.user_id, is_active=True).first()
    if membership is None or user is None:
        await revoke_family(row.family)
        raise Unauthenticated("The session's membership no longer exists.")
    tenant = await Tenant.get(id=row.tenant_id)
    issued = await _issue(ctx, user, tenant, membership, family=row.family)
    # A concurrent second use may have revoked the family before the new row existed:
    # then the new pair dies too (after it, the revocation covers the new row itself).
    if await RefreshToken.filter(family=row.family).exclude(revoked_at=None).exists():
        await _end_session(ctx, row.user_id, row.family)
        raise _reused()
    return issued


@operation(SIGNED_IN)
async def logout(ctx: Context, refresh_token: str | None, everywhere: bool) -> bool:
    principal = ctx.require_principal()
    if principal.user_id is not None:
        forget_user(ctx, principal.user_id)
    await _logout(principal, refresh_token, everywhere)
    if principal.user_id is not None:  # the ended sessions' access tokens stop now
        await authority.changed(ctx.services, user_id=principal.user_id)
    return True


async def _logout(principal: Principal, refresh_token: str | None, everywhere: bool) -> None:
    if everywhere and principal.user_id is not None:
        await revoke_user_sessions(principal.user_id)
        return
    if refresh_token:
        row = await RefreshToken.filter(token_hash=hash_token(refresh_token)).first()
        if row is not None and row.user_id == principal.user_id:
            await revoke_family(row.family)
            return
    if principal.session_family:
        await revoke_family(principal.session_family)


# Registration and login --------------------------------------------------------


@operation(PUBLIC)
async def register_organization(
    ctx: Context, *, organization_name: str, email: str, password: str, name: str
) -> AuthResult:
    organization_name = one_line(organization_name or "", "organizationName")
    require(0 < len(organization_name) <= 200, "organizationName", "must be 1 to 200 characters")
    name = one_line(name or "", "name")
    require(len(name) <= 200, "name", "must be at most 200 characters")
    email = normalize_email(email)
    check_password_strength(password, email=email)
    await throttle(ctx, "register", ctx.client_ip, ctx.settings.login_attempts_per_address)
    if await User.filter(email=email).exists():
        raise Conflict(
            "An account with this email already exists; log in instead.",
            details={"email": "is already registered"},
        )
    password_hash = hash_password(password)
    try:
        async with in_transaction():
            tenant = await Tenant.create(
                name=organization_name, slug=f"{_slugify(organization_name)}-{secrets.token_hex(3)}"
            )
            user = await User.create(
                email=email, name=(name or "").strip(), password_hash=password_hash
            )
            membership = await Membership.create(
                user_id=user.id, tenant_id=tenant.id, role=Role.OWNER.value
            )
    except IntegrityError:
        raise Conflict(
            "An account with this email already exists; log in instead.",
            details={"email": "is already registered"},
        ) from None
    await send_email_token(user, VERIFY_EMAIL, ctx, tenant.id)
    return await start_session(ctx, user, tenant, membership)


async def throttle(ctx: Context, bucket: str, identity: str, spec: str) -> None:
    """Exact budget for attempts an attacker would repeat (logins, resets, invitations)."""
    if ctx.settings.rate_limit_enabled:
        await ctx.services.limiter.enforce(
            spec, bucket, identity, message="Too many attempts; try again later.", exact=True
        )


class SsoRequired(Unauthenticated):
    code = "SSO_REQUIRED"


async def check_sso_policy(membership: Membership, *, via_sso: bool) -> None:
    """SSO_REQUIRED when the membership's organization requires its single sign-on and
    this sign-in did not come through it (OWNERs are exempt: the organization's way in
    when its identity provider is down)."""
    if via_sso or membership.role == Role.OWNER.value:
        return
    if await SsoConnection.filter(tenant_id=membership.tenant_id, required=True).exists():
        raise SsoRequired(
            "This organization requires its single sign-on: sign in at "
            "/auth/sso/{organization}/start."
        )


@operation(PUBLIC)
async def login(ctx: Context, *, email: str, password: str, tenant_id: int | None) -> AuthResult:
    email = (email or "").strip().lower()
    settings = ctx.settings
    await throttle(ctx, "login-addr", ctx.client_ip, settings.login_attempts_per_address)
    await throttle(ctx, "login-account", email, settings.login_attempts_per_account)
    user = await User.filter(email=email, is_active=True).first()
    if not verify_password(user.password_hash if user else None, password or "") or user is None:
        raise Unauthenticated("Wrong email or password.")
    if password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        await user.save(update_fields=["password_hash"])
    memberships = Membership.filter(user_id=user.id)
    if tenant_id is not None:
        memberships = memberships.filter(tenant_id=tenant_id)
    membership = await memberships.order_by("created_at", "id").first()
    if membership is None:
        if tenant_id is not None:
            raise NotFound("Organization not found.")
        raise Unauthenticated("This account belongs to no organization.")
    await check_sso_policy(membership, via_sso=False)
    tenant = await Tenant.get(id=membership.tenant_id)
    return await start_session(ctx, user, tenant, membership)


@operation(SIGNED_IN)
async def switch_tenant(ctx: Context, tenant_id: int) -> AuthResult:
    principal = ctx.require_principal()
    if principal.api_key_id is not None:
        raise BadUserInput(
            "API keys belong to one organization.",
            details={"tenantId": "API keys cannot switch organization"},
        )
    membership = await Membership.filter(user_id=principal.user_id, tenant_id=tenant_id).first()
    if membership is None:
        raise NotFound("Organization not found.")
    await check_sso_policy(membership, via_sso=False)
    user = await User.get(id=principal.user_id)
    tenant = await Tenant.get(id=tenant_id)
    return await start_session(ctx, user, tenant, membership)


# Viewer ---------------------------------------------------------------------------


async def current_user(ctx: Context) -> User:
    principal = ctx.require_principal()
    if principal.user_id is None:
        raise NotFound("This API key has no user.")
    user = await ctx.loader("users", _load_users).load(principal.user_id)
    if user is None:
        raise Unauthenticated("The account no longer exists.")
    return user


async def _load_users(ids: list[int]) -> list[User | None]:
    rows = {u.id: u for u in await User.filter(id__in=ids, is_active=True)}
    return [rows.get(i) for i in ids]


async def load_tenant(ctx: Context, tenant_id: int) -> Tenant | None:
    return await ctx.loader("tenants", _load_tenants).load(tenant_id)


async def _load_tenants(ids: list[int]) -> list[Tenant | None]:
    rows = {t.id: t for t in await Tenant.filter(id__in=ids)}
    return [rows.get(i) for i in ids]


async def load_user(ctx: Context, user_id: int) -> User | None:
    """Users are global rows; callers only reach ids that came from their own tenant."""
    return await ctx.loader("users", _load_users).load(user_id)


async def viewer_user(ctx: Context) -> UserProfile | None:
    """The signed-in user's profile for `me`, from the viewer cache when fresh (an inactive
    or deleted user is None); None for an API key without a user."""
    user_id = ctx.require_principal().user_id
    if user_id is None:
        return None

    async def load() -> UserProfile | None:
        row = await load_user(ctx, user_id)
        return None if row is None else UserProfile.of(row)

    cache = viewer_cache.cache_of(ctx.services).users
    return await read_through(cache, user_id, ctx.settings.viewer_cache_seconds, load)


async def viewer_tenant(ctx: Context) -> TenantProfile | None:
    """The session's organization profile for `me`, from the viewer cache when fresh."""
    tenant_id = ctx.tenant_id

    async def load() -> TenantProfile | None:
        row = await load_tenant(ctx, tenant_id)
        return None if row is None else TenantProfile.of(row)

    cache = viewer_cache.cache_of(ctx.services).tenants
    ttl = ctx.settings.viewer_cache_seconds
    return await read_through(cache, tenant_id, ttl, load)


@operation(SIGNED_IN)
async def viewer_profiles(
    ctx: Context, *, user: bool, tenant: bool
) -> tuple[UserProfile | None, TenantProfile | None]:
    """Both profiles for `me` when both are asked for: cache hits answer at once; when
    both miss, the two reads run side by side (they overlap on PostgreSQL's pool)."""
    if not (user and tenant):
        return (
            await viewer_user(ctx) if user else None,
            await viewer_tenant(ctx) if tenant else None,
        )
    cache = viewer_cache.cache_of(ctx.services)
    principal = ctx.require_principal()
    ttl, now = ctx.settings.viewer_cache_seconds, time.monotonic()
    user_missing = principal.user_id is not None and (
        ttl <= 0 or cache.users.get(principal.user_id, now) is None
    )
    tenant_missing = ttl <= 0 or cache.tenants.get(principal.tenant_id, now) is None
    if user_missing and tenant_missing:
        found_user, found_tenant = await asyncio.gather(viewer_user(ctx), viewer_tenant(ctx))
        return found_user, found_tenant
    return await viewer_user(ctx), await viewer_tenant(ctx)


def forget_user(ctx: Context, user_id: int) -> None:
    """Call after changing a user's profile fields, memberships or roles, or deactivating
    them (drops their cached profile and cached answers)."""
    viewer_cache.forget_user(ctx.services, user_id)


def forget_tenant(ctx: Context, tenant_id: int) -> None:
    """Call after changing an organization's name or slug."""
    viewer_cache.forget_tenant(ctx.services, tenant_id)


async def my_memberships(ctx: Context) -> list[Membership]:
    """The viewer's memberships, oldest first, each with its organization read in the
    same statement (a join), however many organizations the viewer belongs to. An API
    key sees only its own organization: its creator's other organizations are none of
    its business."""
    principal = ctx.require_principal()
    if principal.user_id is None:
        return []
    rows = Membership.filter(user_id=principal.user_id)
    if principal.api_key_id is not None:
        rows = rows.filter(tenant_id=principal.tenant_id)
    return list(await rows.select_related("tenant").order_by("created_at", "id"))


async def deactivate_user(ctx: Context, user_id: int) -> bool:
    """Disable an account (operators: `switchboard deactivate-user`): it can no longer
    sign in, its sessions end, and every token and API key of it stops at its next
    request in every process (`resolvers.authority`). False when there is no such user."""
    found = await User.filter(id=user_id).update(is_active=False)
    if not found:
        return False
    await revoke_user_sessions(user_id)
    forget_user(ctx, user_id)
    await authority.changed(ctx.services, user_id=user_id)
    return True


@operation(SIGNED_IN)
async def update_profile(ctx: Context, *, name: str | None) -> User:
    user = await current_user(ctx)
    if name is not None:
        require(len(name) <= 200, "name", "must be at most 200 characters")
        user.name = one_line(name, "name")
        await user.save(update_fields=["name", "updated_at"])
        forget_user(ctx, user.id)
    return user


@operation("tenant:update")
async def update_organization(ctx: Context, *, name: str | None) -> Tenant:
    """Rename the caller's organization (its slug, an identifier, stays). Cached viewer
    answers that show the name are dropped here at once."""
    tenant = await Tenant.get_or_none(id=ctx.tenant_id)
    if tenant is None:
        raise NotFound("Organization not found.")
    if name is not None:
        cleaned = one_line(name, "name")
        require(bool(cleaned), "name", "must not be empty")
        require(len(cleaned) <= 200, "name", "must be at most 200 characters")
        tenant.name = cleaned
        await tenant.save(update_fields=["name", "updated_at"])
        forget_tenant(ctx, tenant.id)
    return tenant


@operation(SIGNED_IN)
async def change_password(ctx: Context, *, current_password: str, new_password: str) -> bool:
    user = await current_user(ctx)
    await throttle(ctx, "login-account", user.email, ctx.settings.login_attempts_per_account)
    if not verify_password(user.password_hash, current_password):
        raise BadUserInput("Current password is wrong.", details={"currentPassword": "is wrong"})
    check_password_strength(new_password, email=user.email)
    user.password_hash = hash_password(new_password)
    await user.save(update_fields=["password_hash", "updated_at"])
    family = ctx.require_principal().session_family
    # Other sessions end; this one stays.
    others = RefreshToken.filter(user_id=user.id, revoked_at=None)
    if family:
        others = others.exclude(family=family)
    await others.update(revoked_at=now())
    await authority.changed(ctx.services, user_id=user.id)  # their access tokens stop too
    return True


# Email tokens ------------------------------------------------------------------------


async def send_email_token(user: User, purpose: str, ctx: Context, tenant_id: int) -> None:
    """A new single-use token for `purpose` and the mail that carries it, written in one
    transaction (the mail service sends it; see resolvers/mail/)."""
    token = new_token()
    ttl = (
        ctx.settings.email_token_ttl_seconds
        if purpose == VERIFY_EMAIL
        else ctx.settings.password_reset_ttl_seconds
    )
    organization = await mail.organization_name(tenant_id)
    # The token goes in the link's fragment: browsers never send it to the front end's
    # server (its logs) nor in a Referer.
    if purpose == VERIFY_EMAIL:
        link = f"{ctx.settings.app_url}/verify-email#token={token}"
        variables = {"name": user.name, "token": token, "link": link, "hours": ttl // 3600}
    else:
        link = f"{ctx.settings.app_url}/reset-password#token={token}"
        variables = {"token": token, "link": link, "minutes": ttl // 60}
    body = mail.render(purpose, variables, organization=organization)
    async with in_transaction() as conn:
        await EmailToken.create(
            user_id=user.id,
            purpose=purpose,
            token_hash=hash_token(token),
            expires_at=now() + dt.timedelta(seconds=ttl),
            using_db=conn,
        )
        await mail.queue(
            settings=ctx.settings,
            tenant_id=tenant_id,
            kind=purpose,
            to=mail.Recipient.of(user.email, user.name),
            body=body,
            organization=organization,
            connection=conn,
        )


async def _consume_email_token(token: str, purpose: str) -> EmailToken:
    row = await EmailToken.filter(token_hash=hash_token(token or ""), purpose=purpose).first()
    if row is None or row.used_at is not None or row.expires_at <= now():
        raise BadUserInput(
            "This link is invalid or has expired.", details={"token": "is invalid, used or expired"}
        )
    used = await EmailToken.filter(id=row.id, used_at=None).update(used_at=now())
    if not used:
        raise BadUserInput(
            "This link is invalid or has expired.", details={"token": "is invalid, used or expired"}
        )
    return row


@operation(SIGNED_IN)
async def request_email_verification(ctx: Context) -> bool:
    user = await current_user(ctx)
    if user.email_verified_at is None:
        await throttle(ctx, "verify-mail", str(user.id), "5/hour")
        await send_email_token(user, VERIFY_EMAIL, ctx, ctx.tenant_id)
    return True


@operation(PUBLIC)
async def verify_email(ctx: Context, token: str) -> User:
    row = await _consume_email_token(token, VERIFY_EMAIL)
    user = await User.get(id=row.user_id)
    if user.email_verified_at is None:
        user.email_verified_at = now()
        await user.save(update_fields=["email_verified_at", "updated_at"])
        forget_user(ctx, user.id)
    return user


@operation(PUBLIC)
async def request_password_reset(ctx: Context, email: str) -> bool:
    """Always true: the answer must not tell whether an account exists."""
    email = (email or "").strip().lower()
    await throttle(ctx, "reset-addr", ctx.client_ip, ctx.settings.login_attempts_per_address)
    await throttle(ctx, "reset-account", email, "5/hour")
    user = await User.filter(email=email, is_active=True).first()
    if user is not None:
        # The mail is the user's oldest organization's (it lists it in `sentEmails`); a
        # person in no organization cannot sign in, so there is nothing to reset for.
        first = await Membership.filter(user_id=user.id).order_by("id").first()
        if first is not None:
            await send_email_token(user, RESET_PASSWORD, ctx, first.tenant_id)
    return True


@operation(PUBLIC)
async def reset_password(ctx: Context, token: str, new_password: str) -> bool:
    row = await EmailToken.filter(
        token_hash=hash_token(token or ""), purpose=RESET_PASSWORD
    ).first()
    if row is not None:
        user = await User.get(id=row.user_id)
        check_password_strength(new_password, email=user.email)  # before spending the token
    row = await _consume_email_token(token, RESET_PASSWORD)
    user = await User.get(id=row.user_id)
    user.password_hash = hash_password(new_password)
    await user.save(update_fields=["password_hash", "updated_at"])
    await revoke_user_sessions(user.id)
    await authority.changed(ctx.services, user_id=user.id)  # their access tokens stop too
    return True
