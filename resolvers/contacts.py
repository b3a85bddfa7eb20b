"""CRM contacts: checks, list with filters and order, create, update, delete, and the
batch upsert by external id (resolvers/crm.py holds what leads and tasks share)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, NotFound
from kit.text import EMAIL_RE
from models.contacts import Contact, plain_rows
from models.tenancy import get_scoped, scoped
from resolvers.context import Context
from resolvers.crm import (
    Problems,
    UpsertResult,
    api_fields,
    changed,
    check_unique_external_id,
    emit_change,
    external_id,
    members_among,
    order_of,
    require_member,
    run_upsert,
    save_unique,
    text,
    users_loader,
)
from resolvers.operations import operation
from resolvers.pagination import Page, page_of
from resolvers.tasks import open_tasks_loader

PHONE_RE = re.compile(r"^\+?[0-9 ().\-/]{3,}((ext\.?|x) ?[0-9]{1,6})?$", re.IGNORECASE)
CONTACT_ORDER_FIELDS = frozenset({"id", "name", "email", "created_at", "updated_at"})


# Input checks -----------------------------------------------------------------------


def clean_contact(data: dict[str, Any], *, creating: bool, problems: Problems) -> None:
    text(data, "name", problems, max_length=200, required=True, creating=creating)
    text(data, "email", problems, max_length=320)
    if data.get("email"):
        email = data["email"].lower()
        if not EMAIL_RE.match(email):
            problems.add("email", "is not a valid email address")
        data["email"] = email
    text(data, "phone", problems, max_length=50)
    if data.get("phone") and not PHONE_RE.match(data["phone"]):
        problems.add("phone", "is not a phone number (digits, spaces, + ( ) - . /, ext)")
    text(data, "company", problems, max_length=200)
    text(data, "notes", problems, max_length=10_000)
    external_id(data, problems)


# Tenant members (owners, assignees) ---------------------------------------------------


# Contacts ---------------------------------------------------------------------------

# What the Contact type shows; list reads select exactly these.
CONTACT_COLUMNS = (
    "id",
    "name",
    "email",
    "phone",
    "company",
    "notes",
    "external_id",
    "owner_id",
    "created_at",
    "updated_at",
)


@dataclass
class ContactFilter:
    search: str | None = None
    owner_id: int | None = None


@operation("crm:read")
async def list_contacts(
    ctx: Context,
    *,
    first: int | None,
    after: str | None,
    filter: ContactFilter | None,
    order_field: str = "created_at",
    descending: bool = False,
    with_owner: bool = False,
    with_open_tasks: bool = False,
) -> Page[Any]:
    """A page of contacts as plain dicts of CONTACT_COLUMNS.

    `with_owner` / `with_open_tasks` (the caller asks for them) add `owner` (a User or
    None) and `open_tasks` (plain task dicts) to each item, loaded for the whole page
    through the request's DataLoaders (one statement each, cached for the request):
    the per-contact fields then answer without waiting on a loader each."""
    tenant_id = ctx.require_principal().tenant_id
    order = order_of(order_field, descending, CONTACT_ORDER_FIELDS)
    qs = scoped(Contact, tenant_id)
    f = filter or ContactFilter()
    if f.search is not None:
        search = f.search.strip()
        if len(search) > 200:
            raise BadUserInput(
                "Search text too long.", details={"filter.search": "must be at most 200 characters"}
            )
        if search:
            qs = qs.filter(
                Q(name__icontains=search)
                | Q(email__icontains=search)
                | Q(company__icontains=search)
            )
    if f.owner_id is not None:
        await require_member(tenant_id, f.owner_id, "filter.ownerId")
        qs = qs.filter(owner_id=f.owner_id)
    page = await page_of(
        ctx,
        qs,
        first=first,
        after=after,
        order=order,
        fetch=lambda window: plain_rows(window, CONTACT_COLUMNS),
    )
    rows = page.items
    if with_owner and rows:
        owner_ids = {r["owner_id"] for r in rows if r["owner_id"] is not None}
        users = await users_loader(ctx).load_many(list(owner_ids))
        found = dict(zip(owner_ids, users, strict=True))
        for r in rows:
            r["owner"] = found.get(r["owner_id"])
    if with_open_tasks and rows:
        tasks = await open_tasks_loader(ctx, "contact_id").load_many([r["id"] for r in rows])
        for r, open_tasks in zip(rows, tasks, strict=True):
            r["open_tasks"] = open_tasks
    return page


async def get_contact(ctx: Context, contact_id: int) -> Contact:
    return await get_scoped(Contact, ctx.require("crm:read").tenant_id, contact_id)


@operation("crm:write")
async def create_contact(ctx: Context, data: dict[str, Any]) -> Contact:
    tenant_id = ctx.require_principal().tenant_id
    problems = Problems()
    clean_contact(data, creating=True, problems=problems)
    problems.check()
    await require_member(tenant_id, data.get("owner_id"), "ownerId")
    await check_unique_external_id(Contact, tenant_id, data.get("external_id"))
    row = Contact(tenant_id=tenant_id, **data)
    async with in_transaction() as conn:
        await save_unique(row, using_db=conn)
        await emit_change(conn, tenant_id, "contact.created", "Contact", row.id)
    return row


@operation("crm:write")
async def update_contact(ctx: Context, contact_id: int, changes: dict[str, Any]) -> Contact:
    tenant_id = ctx.require_principal().tenant_id
    row = await get_scoped(Contact, tenant_id, contact_id)
    problems = Problems()
    clean_contact(changes, creating=False, problems=problems)
    problems.check()
    if "owner_id" in changes:
        await require_member(tenant_id, changes["owner_id"], "ownerId")
    if "external_id" in changes:
        await check_unique_external_id(Contact, tenant_id, changes["external_id"], row.id)
    diff = changed(row, changes)
    if diff:
        row.update_from_dict(diff)
        async with in_transaction() as conn:
            await save_unique(row, update_fields=[*diff, "updated_at"], using_db=conn)
            await emit_change(
                conn, tenant_id, "contact.updated", "Contact", row.id, fields=api_fields(diff)
            )
    return row


@operation("crm:delete")
async def delete_contact(ctx: Context, contact_id: int) -> int:
    tenant_id = ctx.require_principal().tenant_id
    async with in_transaction() as conn:
        deleted = await scoped(Contact, tenant_id).filter(id=contact_id).using_db(conn).delete()
        if not deleted:
            raise NotFound("Contact not found.")
        await emit_change(conn, tenant_id, "contact.deleted", "Contact", contact_id)
    return contact_id


# Batch upserts by external id (CRM sync) -------------------------------------------


async def _prepare_contacts(tenant_id: int, items: list[dict[str, Any]]) -> set[int]:
    return await members_among(tenant_id, (i.get("owner_id") for i in items))


def _clean_contact_item(item: dict[str, Any], current: Any, members: set[int]) -> dict[str, Any]:
    problems = Problems()
    clean_contact(item, creating=current is None, problems=problems)
    problems.check()
    owner_id = item.get("owner_id")
    if owner_id is not None and owner_id not in members:
        raise NotFound("User not found.", details={"ownerId": "not found"})
    return item


@operation("crm:sync")
async def upsert_contacts(ctx: Context, items: list[dict[str, Any]]) -> list[UpsertResult]:
    return await run_upsert(
        ctx,
        Contact,
        items,
        type_name="Contact",
        prepare=_prepare_contacts,
        clean=_clean_contact_item,
    )
