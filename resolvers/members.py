"""Members of a tenant: who they are, their roles, invitations to join.

Rules kept here, for GraphQL and any HTTP caller alike:
- who touches which role is `kit.roles.MANAGES` (an OWNER every role, a MANAGER the
  roles below MANAGER): inviting as, revoking an invitation for, removing, and moving a
  member from or to a role;
- an organization always keeps at least one OWNER (removal, demotion, leaving);
- changes to one tenant's memberships are serialised by locking the tenant row, and the
  caller's own membership is read inside that lock (`resolvers.authority.confirm`), so
  two owners demoting each other at once cannot leave the organization without an owner,
  and a caller demoted or removed a moment ago acts with what it holds now;
- a change applies on the member's next request, whatever token they hold
  (`resolvers.authority.changed`); removal also revokes the member's sessions in the
  tenant and the API keys they created there; a demotion caps those keys at the new
  role (`kit.roles.cap`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tortoise.exceptions import IntegrityError
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, Conflict, Forbidden, Unauthenticated, require
from kit.roles import Role, cap, manages
from kit.security import (
    Principal,
    check_password_strength,
    hash_password,
    hash_token,
    new_token,
    verify_password,
)
from kit.text import one_line
from models.accounts import User
from models.apikeys import ApiKey
from models.members import Invitation, Membership
from models.tenancy import get_scoped, scoped
from models.tenants import Tenant
from resolvers import accounts, authority, mail
from resolvers.accounts import AuthResult, normalize_email, now
from resolvers.context import Context
from resolvers.events import emit, global_id
from resolvers.operations import PUBLIC, SIGNED_IN, operation
from resolvers.pagination import Order, Page, page_of

INVITATION_MAIL = "invitation"
INVITES_PER_TENANT = "200/hour"


async def users_by_ids(ctx: Context, raw_ids: list[str]) -> list[User | None]:
    """Users visible to the caller: members of the caller's organization only."""
    principal = ctx.require("members:read")
    ids = [int(i) for i in raw_ids if i.isdigit()]
    member_ids = set(
        await scoped(Membership, principal.tenant_id)
        .filter(user_id__in=ids)
        .values_list("user_id", flat=True)
    )
    users = {u.id: u for u in await User.filter(id__in=member_ids)}
    return [users.get(int(i)) if i.isdigit() else None for i in raw_ids]


def parse_role(value: str, field: str = "role") -> Role:
    try:
        return Role(value)
    except ValueError:
        raise BadUserInput(
            f"{field}: unknown role", details={field: f"must be one of {', '.join(Role)}"}
        ) from None


def require_manages(principal: Principal, role: Role, what: str) -> None:
    if not manages(principal.role, role):
        raise Forbidden(
            f"A {principal.role.value} cannot {what} with role {role.value}.",
            details={"role": f"is not a role a {principal.role.value} manages"},
        )


@asynccontextmanager
async def tenant_lock(tenant_id: int) -> AsyncIterator[None]:
    """A transaction holding the tenant row's lock (PostgreSQL; SQLite serialises writes)."""
    async with in_transaction():
        await Tenant.filter(id=tenant_id).select_for_update().first()
        yield


async def _owner_count(tenant_id: int) -> int:
    return await scoped(Membership, tenant_id).filter(role=Role.OWNER.value).count()


async def _revoke_access(user_id: int, tenant_id: int) -> None:
    """End a former member's sessions in the tenant and the API keys they created there."""
    await accounts.revoke_user_sessions(user_id, tenant_id)
    await (
        scoped(ApiKey, tenant_id)
        .filter(created_by_id=user_id, revoked_at=None)
        .update(revoked_at=now())
    )


# Members -----------------------------------------------------------------------------


@operation("members:read")
async def list_members(ctx: Context, *, first: int | None, after: str | None) -> Page[Membership]:
    principal = ctx.require_principal()
    return await page_of(
        ctx, scoped(Membership, principal.tenant_id), first=first, after=after, order=Order("id")
    )


@operation("members:manage")
async def change_member_role(ctx: Context, *, member_id: int, role: str) -> Membership:
    principal = ctx.require_principal()
    new_role = parse_role(role)
    async with tenant_lock(principal.tenant_id):
        principal = await authority.confirm(ctx, "members:manage")
        require_manages(principal, new_role, "give a member")
        member = await get_scoped(Membership, principal.tenant_id, member_id)
        old_role = Role(member.role)
        require_manages(principal, old_role, "change the role of a member")
        if old_role == new_role:
            return member
        if old_role is Role.OWNER and await _owner_count(principal.tenant_id) <= 1:
            raise Conflict(
                "This is the organization's last owner; make another member an owner first.",
                details={"memberId": "is the last owner"},
            )
        member.role = new_role.value
        await member.save(update_fields=["role", "updated_at"])
        accounts.forget_user(ctx, member.user_id)  # their `me { memberships }`
        await emit(
            member.tenant_id,
            "member.role_changed",
            {"id": global_id("Member", member.id), "role": new_role.value},
        )
        # A key never holds more than its creator: each is capped at the new role.
        keys = scoped(ApiKey, principal.tenant_id).filter(
            created_by_id=member.user_id, revoked_at=None
        )
        for key in await keys:
            capped = cap(key.role, new_role)
            if capped.value != key.role:
                await ApiKey.filter(id=key.id).update(role=capped.value)
    await authority.changed(ctx.services, user_id=member.user_id, tenant_id=member.tenant_id)
    return member


@operation("members:manage")
async def remove_member(ctx: Context, *, member_id: int) -> Membership:
    principal = ctx.require_principal()
    async with tenant_lock(principal.tenant_id):
        principal = await authority.confirm(ctx, "members:manage")
        member = await get_scoped(Membership, principal.tenant_id, member_id)
        require_manages(principal, Role(member.role), "remove a member")
        await _delete_membership(member)
        accounts.forget_user(ctx, member.user_id)
    await authority.changed(ctx.services, user_id=member.user_id, tenant_id=member.tenant_id)
    return member


@operation(SIGNED_IN)
async def leave_organization(ctx: Context) -> bool:
    principal = ctx.require_principal()
    if principal.api_key_id is not None or principal.user_id is None:
        raise Forbidden("An API key cannot leave an organization; revoke it instead.")
    async with tenant_lock(principal.tenant_id):
        member = (
            await scoped(Membership, principal.tenant_id).filter(user_id=principal.user_id).first()
        )
        if member is None:
            raise Unauthenticated("You are no longer a member of this organization.")
        await _delete_membership(member)
        accounts.forget_user(ctx, member.user_id)
    await authority.changed(ctx.services, user_id=member.user_id, tenant_id=member.tenant_id)
    return True


async def _delete_membership(member: Membership) -> None:
    """Inside `tenant_lock`: the last-owner rule, then the deletion and revocations."""
    if member.role == Role.OWNER.value and await _owner_count(member.tenant_id) <= 1:
        raise Conflict(
            "This is the organization's last owner; make another member an owner first.",
            details={"memberId": "is the last owner"},
        )
    await Membership.filter(id=member.id).delete()
    await emit(
        member.tenant_id,
        "member.removed",
        {"id": global_id("Member", member.id), "userId": global_id("User", member.user_id)},
    )
    await _revoke_access(member.user_id, member.tenant_id)


# Invitations -------------------------------------------------------------------------


def pending(qs: QuerySet[Invitation]) -> QuerySet[Invitation]:
    return qs.filter(accepted_at=None, revoked_at=None, expires_at__gt=now())


@operation("members:invite")
async def list_invitations(
    ctx: Context, *, first: int | None, after: str | None
) -> Page[Invitation]:
    principal = ctx.require_principal()
    return await page_of(
        ctx, pending(scoped(Invitation, principal.tenant_id)), first=first, after=after
    )


@operation("members:invite")
async def invite_member(ctx: Context, *, email: str, role: str) -> Invitation:
    principal = ctx.require_principal()
    email = normalize_email(email)
    new_role = parse_role(role)
    require_manages(principal, new_role, "invite a member")
    tenant = await Tenant.get(id=principal.tenant_id)
    existing = await User.filter(email=email).first()
    if (
        existing is not None
        and await scoped(Membership, tenant.id).filter(user_id=existing.id).exists()
    ):
        raise Conflict("This person is already a member.", details={"email": "is already a member"})
    if ctx.settings.rate_limit_enabled:
        await ctx.services.limiter.enforce(
            INVITES_PER_TENANT, "invite", str(tenant.id), message="Too many invitations."
        )
    token = new_token()
    ttl = ctx.settings.invitation_ttl_seconds
    async with tenant_lock(tenant.id):
        principal = await authority.confirm(ctx, "members:invite")
        require_manages(principal, new_role, "invite a member")
        inviter = await User.filter(id=principal.user_id).first() if principal.user_id else None
        body = mail.render(
            INVITATION_MAIL,
            {
                "inviter": (inviter.name or inviter.email) if inviter else "Someone",
                "role": new_role.value,
                "token": token,
                "link": f"{ctx.settings.app_url}/accept-invitation#token={token}",
                "hours": max(1, ttl // 3600),
            },
            organization=tenant.name,
        )
        # A new invitation replaces any pending one for the same address.
        await pending(scoped(Invitation, tenant.id)).filter(email=email).update(revoked_at=now())
        invitation = await Invitation.create(
            tenant_id=tenant.id,
            email=email,
            role=new_role.value,
            token_hash=hash_token(token),
            invited_by_id=principal.user_id,
            expires_at=now() + dt.timedelta(seconds=ttl),
        )
        await emit(
            tenant.id,
            "member.invited",
            {"id": global_id("Invitation", invitation.id), "role": new_role.value},
        )
        # In the tenant lock's transaction, with the invitation.
        await mail.queue(
            settings=ctx.settings,
            tenant_id=tenant.id,
            kind=INVITATION_MAIL,
            to=mail.Recipient(email),
            body=body,
            organization=tenant.name,
        )
    return invitation


@operation("members:invite")
async def revoke_invitation(ctx: Context, *, invitation_id: int) -> Invitation:
    principal = await authority.confirm(ctx, "members:invite")
    invitation = await get_scoped(Invitation, principal.tenant_id, invitation_id)
    require_manages(principal, Role(invitation.role), "revoke an invitation")
    if invitation.accepted_at is not None:
        raise Conflict(
            "This invitation was already accepted; remove the member instead.",
            details={"id": "was already accepted"},
        )
    if invitation.revoked_at is None:
        invitation.revoked_at = now()
        await invitation.save(update_fields=["revoked_at", "updated_at"])
    return invitation


def _bad_token(problem: str) -> BadUserInput:
    return BadUserInput(f"This invitation {problem}.", details={"token": problem})


@dataclass
class _Joiner:
    user: User | None  # None: a new account is created on acceptance
    password_hash: str | None = None


async def _who_accepts(ctx: Context, email: str, name: str | None, password: str | None) -> _Joiner:
    user = await User.filter(email=email).first()
    if user is None:
        if not password:
            raise BadUserInput(
                "Choose a password for your new account.",
                details={"password": "is required to create your account"},
            )
        require(len(one_line(name or "", "name")) <= 200, "name", "must be at most 200 characters")
        check_password_strength(password, email=email)
        return _Joiner(None, hash_password(password))
    if not user.is_active:
        raise Unauthenticated("This account is disabled.")
    principal = ctx.principal
    if principal is not None and principal.api_key_id is None and principal.user_id == user.id:
        return _Joiner(user)
    if not password:
        raise BadUserInput(
            "An account exists for this email: sign in as it, or give its password.",
            details={"password": "is required: an account exists for this email"},
        )
    # The same budget as login, so invitations are no side door for guessing passwords.
    await accounts.throttle(
        ctx, "login-addr", ctx.client_ip, ctx.settings.login_attempts_per_address
    )
    await accounts.throttle(ctx, "login-account", email, ctx.settings.login_attempts_per_account)
    if not verify_password(user.password_hash, password):
        raise Unauthenticated("Wrong password for the invited account.")
    return _Joiner(user)


@operation(PUBLIC)
async def accept_invitation(
    ctx: Context, *, token: str, name: str | None, password: str | None
) -> AuthResult:
    row = await Invitation.filter(token_hash=hash_token(token or "")).first()
    if row is None:
        raise _bad_token("is unknown")
    if row.accepted_at is not None:
        raise _bad_token("was already used")
    if row.revoked_at is not None:
        raise _bad_token("was revoked")
    if row.expires_at <= now():
        raise _bad_token("has expired")
    joiner = await _who_accepts(ctx, row.email, name, password)
    user = joiner.user
    if (
        user is not None
        and await scoped(Membership, row.tenant_id).filter(user_id=user.id).exists()
    ):
        raise Conflict(
            "You are already a member of this organization.",
            details={"token": "is for an organization you already belong to"},
        )
    try:
        async with in_transaction():
            claimed = await Invitation.filter(id=row.id, accepted_at=None, revoked_at=None).update(
                accepted_at=now()
            )
            if not claimed:
                raise _bad_token("was already used")
            if user is None:
                user = await User.create(
                    email=row.email,
                    name=(name or "").strip(),
                    password_hash=joiner.password_hash,
                    email_verified_at=now(),  # the token arrived at this address
                )
            membership = await Membership.create(
                user_id=user.id, tenant_id=row.tenant_id, role=row.role
            )
            await emit(
                row.tenant_id,
                "member.joined",
                {"userId": global_id("User", user.id), "role": row.role},
            )
    except IntegrityError:
        # A concurrent acceptance created the account or the membership first.
        raise Conflict(
            "You are already a member of this organization.",
            details={"token": "is for an organization you already belong to"},
        ) from None
    accounts.forget_user(ctx, user.id)  # a new entry in their `me { memberships }`
    await authority.changed(ctx.services, user_id=user.id, tenant_id=row.tenant_id)
    tenant = await Tenant.get(id=row.tenant_id)
    return await accounts.start_session(ctx, user, tenant, membership)


async def load_member_user(ctx: Context, user_id: int) -> User | None:
    """The account behind a membership row the caller already read through its tenant."""
    return await ctx.loader("member-users", _load_users).load(user_id)


async def _load_users(ids: list[int]) -> list[User | None]:
    rows = {u.id: u for u in await User.filter(id__in=ids)}
    return [rows.get(i) for i in ids]
