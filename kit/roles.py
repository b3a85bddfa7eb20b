"""Roles and the one permission matrix every check reads.

Fields declare a permission name; this matrix says which roles hold it. The
schema prints each field's roles into its description, so `schema.graphql`
documents the matrix too.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "OWNER"
    MANAGER = "MANAGER"
    SUPPORT = "SUPPORT"
    ACCOUNTING = "ACCOUNTING"
    READ_ONLY = "READ_ONLY"


ALL = frozenset(Role)
O = Role.OWNER  # noqa: E741
M = Role.MANAGER
S = Role.SUPPORT
A = Role.ACCOUNTING

# permission -> roles that hold it. Order of roles in the tuple is how docs print them.
MATRIX: dict[str, frozenset[Role]] = {
    # organisation and members
    "tenant:read": ALL,
    "tenant:update": frozenset({O}),
    "members:read": ALL,
    "members:invite": frozenset({O, M}),
    "members:manage": frozenset({O}),
    "apikeys:manage": frozenset({O, M}),
    # CRM
    "crm:read": ALL,
    "crm:write": frozenset({O, M, S}),
    "crm:delete": frozenset({O, M}),
    "crm:sync": frozenset({O, M}),
    # integrations
    "integrations:read": frozenset({O, M}),
    "credentials:tenant": frozenset({O, M}),
    "credentials:own": frozenset({O, M, S, A}),
    # AI
    "ai:use": frozenset({O, M, S, A}),
    "ai:usage": frozenset({O, A}),
    # operations
    "jobs:manage": frozenset({O}),
    "activity:read": ALL,
    "webhooks:inbox": frozenset({O}),
    "webhooks:manage": frozenset({O, M}),
}


# Who may hand out which role (inviting, changing roles, creating API keys): a role
# can grant itself or any role ranked strictly below it. SUPPORT and ACCOUNTING share
# a rank but hold different permissions, so neither can grant the other.
RANK: dict[Role, int] = {
    Role.OWNER: 3,
    Role.MANAGER: 2,
    Role.SUPPORT: 1,
    Role.ACCOUNTING: 1,
    Role.READ_ONLY: 0,
}


def can_grant(granter: Role | str, role: Role | str) -> bool:
    """True when a caller with role `granter` may give someone (or a key) `role`."""
    granter, role = Role(granter), Role(role)
    return role == granter or RANK[role] < RANK[granter]


def roles_for(permission: str) -> frozenset[Role]:
    try:
        return MATRIX[permission]
    except KeyError:
        raise KeyError(f"unknown permission {permission!r}; add it to kit/roles.py") from None


def allowed(role: Role | str | None, permission: str) -> bool:
    if role is None:
        return False
    return Role(role) in roles_for(permission)


def describe(permission: str) -> str:
    roles = roles_for(permission)
    if roles == ALL:
        return "Requires any role."
    names = ", ".join(r.value for r in Role if r in roles)
    return f"Requires role: {names}."
