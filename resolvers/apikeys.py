"""API keys for machine clients: created with a role, shown once, stored hashed.

A key acts in its tenant with its role (see `resolvers.auth`). A caller creates or
revokes only keys whose role it could grant (`kit.roles.can_grant`); an API key
caller is held to the same rule with its own role, so a key never mints a stronger one.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.errors import require
from kit.security import API_KEY_PREFIX, hash_token, new_token
from models.apikeys import ApiKey
from models.tenancy import get_scoped, scoped
from resolvers.accounts import now
from resolvers.context import Context
from resolvers.members import parse_role, require_grantable
from resolvers.pagination import Page, page_of

PREFIX_LENGTH = 12  # "sbk_" and 8 random characters: enough to tell keys apart in a list


@dataclass
class CreatedKey:
    key: ApiKey
    secret: str  # returned once, never stored


async def create_api_key(ctx: Context, *, name: str, role: str) -> CreatedKey:
    principal = ctx.require("apikeys:manage")
    name = (name or "").strip()
    require(0 < len(name) <= 120, "name", "must be 1 to 120 characters")
    key_role = parse_role(role)
    require_grantable(principal, key_role, "create an API key")
    secret = new_token(API_KEY_PREFIX)
    key = await ApiKey.create(
        tenant_id=principal.tenant_id,
        name=name,
        role=key_role.value,
        prefix=secret[:PREFIX_LENGTH],
        key_hash=hash_token(secret),
        created_by_id=principal.user_id,
    )
    return CreatedKey(key, secret)


async def list_api_keys(
    ctx: Context, *, first: int | None, after: str | None, include_revoked: bool
) -> Page[ApiKey]:
    principal = ctx.require("apikeys:manage")
    qs = scoped(ApiKey, principal.tenant_id)
    if not include_revoked:
        qs = qs.filter(revoked_at=None)
    return await page_of(ctx, qs, first=first, after=after)


async def revoke_api_key(ctx: Context, *, key_id: int) -> ApiKey:
    """Takes effect at once: the next request with the key is UNAUTHENTICATED."""
    principal = ctx.require("apikeys:manage")
    key = await get_scoped(ApiKey, principal.tenant_id, key_id)
    require_grantable(principal, parse_role(key.role), "revoke an API key")
    if key.revoked_at is None:
        await ApiKey.filter(id=key.id, revoked_at=None).update(revoked_at=now())
        await key.refresh_from_db(fields=["revoked_at"])
    return key
