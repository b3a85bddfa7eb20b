"""API keys for machine clients: created with a role, shown once, stored hashed.

A key acts in its tenant with its role, capped at its creator's current role on every
request (`resolvers.authority`): a key never holds more than the member who made it. A
caller creates or revokes only keys whose role holds no permission it lacks itself
(`kit.roles.within`), its membership read from the store inside the tenant lock (so a
removal or demotion a moment ago already counts); an API key caller is held to the same
rule with its own role, so a key never mints a stronger one. When the creator is demoted
their keys are capped at the new role; when removed or deactivated, the keys stop at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.errors import Forbidden, require
from kit.roles import Role, within
from kit.security import API_KEY_PREFIX, hash_token, new_token
from models.apikeys import ApiKey
from models.tenancy import get_scoped, scoped
from resolvers import authority
from resolvers.accounts import now
from resolvers.context import Context
from resolvers.members import parse_role, tenant_lock
from resolvers.operations import operation
from resolvers.pagination import Page, page_of

PREFIX_LENGTH = 12  # "sbk_" and 8 random characters: enough to tell keys apart in a list


@dataclass
class CreatedKey:
    key: ApiKey
    secret: str  # returned once, never stored


@operation("apikeys:manage")
async def create_api_key(ctx: Context, *, name: str, role: str) -> CreatedKey:
    principal = ctx.require_principal()
    name = (name or "").strip()
    require(0 < len(name) <= 120, "name", "must be 1 to 120 characters")
    key_role = parse_role(role)
    _require_within(principal.role, key_role, "create")
    secret = new_token(API_KEY_PREFIX)
    async with tenant_lock(principal.tenant_id):
        principal = await authority.confirm(ctx, "apikeys:manage")
        _require_within(principal.role, key_role, "create")
        key = await ApiKey.create(
            tenant_id=principal.tenant_id,
            name=name,
            role=key_role.value,
            prefix=secret[:PREFIX_LENGTH],
            key_hash=hash_token(secret),
            created_by_id=principal.user_id,
        )
    return CreatedKey(key, secret)


def _require_within(holder: Role, key_role: Role, what: str) -> None:
    if not within(key_role, holder):
        raise Forbidden(
            f"A {holder.value} cannot {what} an API key with role {key_role.value}.",
            details={"role": f"holds permissions a {holder.value} lacks"},
        )


@operation("apikeys:manage")
async def list_api_keys(
    ctx: Context, *, first: int | None, after: str | None, include_revoked: bool
) -> Page[ApiKey]:
    principal = ctx.require_principal()
    qs = scoped(ApiKey, principal.tenant_id)
    if not include_revoked:
        qs = qs.filter(revoked_at=None)
    return await page_of(ctx, qs, first=first, after=after)


@operation("apikeys:manage")
async def revoke_api_key(ctx: Context, *, key_id: int) -> ApiKey:
    """Takes effect at once: the next request with the key is UNAUTHENTICATED."""
    principal = await authority.confirm(ctx, "apikeys:manage")
    key = await get_scoped(ApiKey, principal.tenant_id, key_id)
    _require_within(principal.role, parse_role(key.role), "revoke")
    if key.revoked_at is None:
        await ApiKey.filter(id=key.id, revoked_at=None).update(revoked_at=now())
        await key.refresh_from_db(fields=["revoked_at"])
        await authority.changed(ctx.services, key_id=key.id)  # its open sockets end
    return key
