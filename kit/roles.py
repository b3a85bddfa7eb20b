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
    "members:invite": frozenset({O, M}),  # which roles: MANAGES below
    "members:manage": frozenset({O, M}),  # which roles: MANAGES below
    "apikeys:manage": frozenset({O, M}),
    "sso:manage": frozenset({O}),
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
    # mail
    "mail:read": frozenset({O, M}),
    "mail:templates": frozenset({O, M}),
    "mail:send": frozenset({O, M, S}),
    "mail:send_bulk": frozenset({O, M}),
    "mail:suppressions": frozenset({O, M}),
    # files: every member reads; those who work with documents upload; deleting another
    # member's file takes OWNER or MANAGER (the uploader may delete their own: files:write)
    "files:read": ALL,
    "files:write": frozenset({O, M, S, A}),
    "files:delete": frozenset({O, M}),
    # invoices read from mailboxes (the documents, and how reading the mailboxes went)
    "mailbox:read": frozenset({O, M, A}),
    # invoices: read them and follow their status; correct their fields, run OCR again
    "invoices:read": frozenset({O, M, A}),
    "invoices:write": frozenset({O, M, A}),
    # payments: OWNER and ACCOUNTING see them and refund; MANAGER also takes payments
    # (customers, payment intents, confirming and canceling them)
    "payments:read": frozenset({O, A}),
    "payments:create": frozenset({O, M, A}),
    "payments:refund": frozenset({O, A}),
    # the organization's own plan for this SaaS: see it and its invoices, subscribe,
    # open the billing portal
    "billing:read": frozenset({O, A}),
    "billing:manage": frozenset({O, A}),
    # messaging (SMS, WhatsApp): read messages and follow their status, send one, send in
    # bulk, keep the opt-out list
    "messaging:read": frozenset({O, M, S}),
    "messaging:send": frozenset({O, M, S}),
    "messaging:send_bulk": frozenset({O, M}),
    "messaging:opt_outs": frozenset({O, M}),
    # the support inbox: read conversations, answer, assign and close them, AI drafts
    "inbox:read": frozenset({O, M, S}),
    "inbox:write": frozenset({O, M, S}),
    # connected accounts (Google Calendar, Zoom): every member sees which are connected;
    # a member connects their own calendar; only an OWNER connects the organization's
    # (its calendar, its Zoom account), since every member's calls may go through it
    "connections:read": ALL,
    "connections:own": frozenset({O, M, S, A}),
    "connections:tenant": frozenset({O}),
    # calendar: read calendars and events; create, change and delete events (and put
    # tasks on the calendar); share a calendar with someone
    "calendar:read": ALL,
    "calendar:write": frozenset({O, M, S}),
    "calendar:share": frozenset({O, M}),
    # meetings (Zoom): read them (registrants, participants, recordings); create, change,
    # delete them, add registrants and mail invitations
    "meetings:read": ALL,
    "meetings:write": frozenset({O, M, S}),
    # Notion, each person's own: connect it, read and add to their database, sync the
    # CRM's contacts into it
    "notion:use": frozenset({O, M, S, A}),
    # the knowledge base the AI answers from: search it and ask it; add, refresh and
    # remove its sources
    "knowledge:read": frozenset({O, M, S}),
    "knowledge:manage": frozenset({O, M}),
}

# Permissions whose mutations grant or change authority (who belongs, with which role,
# keys, credentials, where data is sent, the organization itself): their mutations check
# the caller's current membership against the store, never a token or a cache.
AUTHORITY: frozenset[str] = frozenset(
    {
        "tenant:update",
        "members:invite",
        "members:manage",
        "apikeys:manage",
        "credentials:tenant",
        "credentials:own",
        "webhooks:manage",
        "connections:own",
        "connections:tenant",
        "notion:use",  # where the CRM's contacts are sent (a person's own Notion)
    }
)


# Who manages whom (inviting as, removing, promoting to, demoting from), as the
# product's role table says: an OWNER manages every role; a MANAGER manages the members
# below MANAGER; nobody else manages members. The `members:*` permissions say who may
# call the operations at all; this table says which roles each caller may touch there.
MANAGES: dict[Role, frozenset[Role]] = {
    Role.OWNER: ALL,
    Role.MANAGER: frozenset({S, A, Role.READ_ONLY}),
    Role.SUPPORT: frozenset(),
    Role.ACCOUNTING: frozenset(),
    Role.READ_ONLY: frozenset(),
}


def manages(actor: Role | str, role: Role | str) -> bool:
    """True when a member with role `actor` may invite as, remove, or move a member
    from or to `role`."""
    return Role(role) in MANAGES[Role(actor)]


def permissions_of(role: Role | str) -> frozenset[str]:
    """Every permission `role` holds, read from MATRIX."""
    role = Role(role)
    return frozenset(p for p, roles in MATRIX.items() if role in roles)


def within(role: Role | str, limit: Role | str) -> bool:
    """True when `role` holds no permission that `limit` lacks. The rule for API keys: a
    key never holds more than its creator. (Ranks are not enough: ACCOUNTING sits below
    MANAGER yet reads AI usage, which a MANAGER cannot.)"""
    return permissions_of(role) <= permissions_of(limit)


def cap(role: Role | str, limit: Role | str) -> Role:
    """`role` cut down to what `limit` holds: itself when within `limit`, else the
    strongest role within both (READ_ONLY at worst, which every role contains)."""
    role, limit = Role(role), Role(limit)
    if within(role, limit):
        return role
    return next(r for r in Role if within(r, role) and within(r, limit))


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
