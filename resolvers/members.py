"""Members of a tenant: who they are, their roles, invitations to join."""

from __future__ import annotations

from models.accounts import User
from models.members import Membership
from resolvers.context import Context


async def users_by_ids(ctx: Context, raw_ids: list[str]) -> list[User | None]:
    """Users visible to the caller: members of the caller's organization only."""
    principal = ctx.require("members:read")
    ids = [int(i) for i in raw_ids if i.isdigit()]
    member_ids = set(
        await Membership.filter(tenant_id=principal.tenant_id, user_id__in=ids).values_list(
            "user_id", flat=True
        )
    )
    users = {u.id: u for u in await User.filter(id__in=member_ids)}
    return [users.get(int(i)) if i.isdigit() else None for i in raw_ids]
