"""CRM leads: a status pipeline NEW → CONTACTED → QUALIFIED → WON | LOST, with money."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, NotFound
from kit.money import CURRENCY_MINOR_UNITS
from models.contacts import Contact
from models.leads import Lead, LeadStatus
from models.tenancy import get_scoped, scoped
from resolvers.context import Context
from resolvers.crm import (
    Problems,
    UpsertResult,
    api_fields,
    by_id_loader,
    changed,
    check_unique_external_id,
    emit_change,
    external_id,
    members_among,
    order_of,
    require_contact,
    require_member,
    run_upsert,
    save_unique,
    text,
)
from resolvers.operations import operation
from resolvers.pagination import Page, page_of

LEAD_ORDER_FIELDS = frozenset({"id", "title", "amount", "created_at", "updated_at"})
MAX_AMOUNT = Decimal("99999999999999")  # 14 integer digits: DecimalField(18, 4)

# Where a lead may go from each status. Open stages move forward (skipping is fine) or
# one step back; LOST is reachable from any open stage; WON only once QUALIFIED.
# WON and LOST are terminal.
TRANSITIONS: dict[LeadStatus, frozenset[LeadStatus]] = {
    LeadStatus.NEW: frozenset({LeadStatus.CONTACTED, LeadStatus.QUALIFIED, LeadStatus.LOST}),
    LeadStatus.CONTACTED: frozenset({LeadStatus.NEW, LeadStatus.QUALIFIED, LeadStatus.LOST}),
    LeadStatus.QUALIFIED: frozenset({LeadStatus.CONTACTED, LeadStatus.WON, LeadStatus.LOST}),
    LeadStatus.WON: frozenset(),
    LeadStatus.LOST: frozenset(),
}
CLOSED = frozenset({LeadStatus.WON, LeadStatus.LOST})


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_transition(current: LeadStatus, new: LeadStatus, problems: Problems) -> None:
    if new != current and new not in TRANSITIONS[current]:
        if current in CLOSED:
            problems.add("status", f"{current.value} is final; a closed lead cannot change status")
        else:
            allowed = ", ".join(s.value for s in LeadStatus if s in TRANSITIONS[current])
            problems.add("status", f"cannot move from {current.value} to {new.value} ({allowed})")


def clean_lead(data: dict[str, Any], current: Lead | None, problems: Problems) -> None:
    """Check and normalise lead input in place (absent keys stay absent)."""
    creating = current is None
    text(data, "title", problems, max_length=200, required=True, creating=creating)
    text(data, "source", problems, max_length=100)
    external_id(data, problems)
    if "currency" in data:
        code = str(data["currency"] or "").strip().upper()
        if code not in CURRENCY_MINOR_UNITS:
            problems.add("currency", "is not an ISO 4217 currency code")
        data["currency"] = code
    currency = data.get("currency") or (current.currency if current else "USD")
    if "amount" in data:
        amount = data["amount"]
        if amount is None:
            problems.add("value", "cannot be null")
        else:
            try:
                amount = Decimal(str(amount))
            except InvalidOperation:
                amount = Decimal("NaN")
            places = CURRENCY_MINOR_UNITS.get(currency, 4)
            if not amount.is_finite():
                problems.add("value", "must be a number")
            elif amount < 0:
                problems.add("value", "cannot be negative")
            elif amount > MAX_AMOUNT:
                problems.add("value", f"must be at most {MAX_AMOUNT}")
            elif -amount.as_tuple().exponent > places:  # type: ignore[operator]
                problems.add("value", f"{currency} allows at most {places} decimal places")
            data["amount"] = amount
    elif "currency" in data and current is not None:
        places = CURRENCY_MINOR_UNITS.get(currency, 4)
        if current.amount != round(current.amount, places):
            problems.add("currency", f"the value has more decimal places than {currency} allows")
    if "status" in data:
        status = data["status"]
        if status is None:
            problems.add("status", "cannot be null")
        else:
            status = LeadStatus(status)
            if current is not None:
                check_transition(current.status, status, problems)
            data["status"] = status
            if current is None or status != current.status:
                data["closed_at"] = now() if status in CLOSED else None


async def load_lead(ctx: Context, lead_id: int | None) -> Lead | None:
    if lead_id is None:
        return None
    result: Lead | None = await by_id_loader(ctx, "crm.leads", Lead).load(lead_id)
    return result


@dataclass
class LeadFilter:
    statuses: list[str] | None = None
    owner_id: int | None = None
    contact_id: int | None = None
    source: str | None = None


@operation("crm:read")
async def list_leads(
    ctx: Context,
    *,
    first: int | None,
    after: str | None,
    filter: LeadFilter | None,
    order_field: str = "created_at",
    descending: bool = False,
) -> Page[Lead]:
    tenant_id = ctx.require_principal().tenant_id
    order = order_of(order_field, descending, LEAD_ORDER_FIELDS)
    qs = scoped(Lead, tenant_id)
    f = filter or LeadFilter()
    if f.statuses is not None:
        qs = qs.filter(status__in=[LeadStatus(s) for s in f.statuses])
    if f.owner_id is not None:
        await require_member(tenant_id, f.owner_id, "filter.ownerId")
        qs = qs.filter(owner_id=f.owner_id)
    if f.contact_id is not None:
        await require_contact(tenant_id, f.contact_id, "filter.contactId")
        qs = qs.filter(contact_id=f.contact_id)
    if f.source is not None:
        qs = qs.filter(source=f.source.strip())
    return await page_of(ctx, qs, first=first, after=after, order=order)


@operation("crm:write")
async def create_lead(ctx: Context, data: dict[str, Any]) -> Lead:
    tenant_id = ctx.require_principal().tenant_id
    problems = Problems()
    clean_lead(data, None, problems)
    problems.check()
    await require_member(tenant_id, data.get("owner_id"), "ownerId")
    await require_contact(tenant_id, data.get("contact_id"), "contactId")
    await check_unique_external_id(Lead, tenant_id, data.get("external_id"))
    row = Lead(tenant_id=tenant_id, **data)
    async with in_transaction() as conn:
        await save_unique(row, using_db=conn)
        await emit_change(conn, tenant_id, "lead.created", "Lead", row.id, status=str(row.status))
    return row


@operation("crm:write")
async def update_lead(ctx: Context, lead_id: int, changes: dict[str, Any]) -> Lead:
    tenant_id = ctx.require_principal().tenant_id
    row = await get_scoped(Lead, tenant_id, lead_id)
    problems = Problems()
    clean_lead(changes, row, problems)
    problems.check()
    if "owner_id" in changes:
        await require_member(tenant_id, changes["owner_id"], "ownerId")
    if "contact_id" in changes:
        await require_contact(tenant_id, changes["contact_id"], "contactId")
    if "external_id" in changes:
        await check_unique_external_id(Lead, tenant_id, changes["external_id"], row.id)
    diff = changed(row, changes)
    if not diff:
        return row
    async with in_transaction() as conn:
        if "status" in diff:
            # Only move the status if nobody else moved it meanwhile (the pipeline check
            # above was made against the status we read).
            moved = await (
                scoped(Lead, tenant_id)
                .filter(id=row.id, status=row.status)
                .using_db(conn)
                .update(status=diff["status"], closed_at=diff.get("closed_at"))
            )
            if not moved:
                raise BadUserInput(
                    "The lead's status changed meanwhile; read it again.",
                    details={"status": "changed concurrently"},
                )
            await emit_change(
                conn,
                tenant_id,
                "lead.status_changed",
                "Lead",
                row.id,
                **{"from": str(row.status), "to": str(diff["status"])},
            )
        others = api_fields(k for k in diff if k not in ("status", "closed_at"))
        row.update_from_dict(diff)
        await save_unique(row, update_fields=[*diff, "updated_at"], using_db=conn)
        if others:
            await emit_change(conn, tenant_id, "lead.updated", "Lead", row.id, fields=others)
    return row


@operation("crm:delete")
async def delete_lead(ctx: Context, lead_id: int) -> int:
    tenant_id = ctx.require_principal().tenant_id
    async with in_transaction() as conn:
        if not await scoped(Lead, tenant_id).filter(id=lead_id).using_db(conn).delete():
            raise NotFound("Lead not found.")
        await emit_change(conn, tenant_id, "lead.deleted", "Lead", lead_id)
    return lead_id


@dataclass
class _LeadLookups:
    members: set[int]
    contact_ids: set[int]
    contacts_by_external_id: dict[str, int]


async def _prepare_leads(tenant_id: int, items: list[dict[str, Any]]) -> _LeadLookups:
    members = await members_among(tenant_id, (i.get("owner_id") for i in items))
    wanted_ids = {i["contact_id"] for i in items if i.get("contact_id") is not None}
    contact_ids: set[int] = set()
    if wanted_ids:
        rows = (
            await scoped(Contact, tenant_id)
            .filter(id__in=list(wanted_ids))
            .values_list("id", flat=True)
        )
        contact_ids = {int(r) for r in rows}  # type: ignore[call-overload]
    wanted_keys = {
        str(i["contact_external_id"]).strip()
        for i in items
        if i.get("contact_external_id") is not None
    }
    by_key: dict[str, int] = {}
    if wanted_keys:
        pairs = (
            await scoped(Contact, tenant_id)
            .filter(external_id__in=list(wanted_keys))
            .values_list("external_id", "id")
        )
        by_key = {str(k): int(v) for k, v in pairs}
    return _LeadLookups(members, contact_ids, by_key)


def _clean_lead_item(item: dict[str, Any], current: Any, lookups: _LeadLookups) -> dict[str, Any]:
    problems = Problems()
    contact_key = item.pop("contact_external_id", None)
    if contact_key is not None and item.get("contact_id") is not None:
        problems.add("contact_external_id", "give contactId or contactExternalId, not both")
    clean_lead(item, current, problems)
    problems.check()
    owner_id = item.get("owner_id")
    if owner_id is not None and owner_id not in lookups.members:
        raise NotFound("User not found.", details={"ownerId": "not found"})
    contact_id = item.get("contact_id")
    if contact_id is not None and contact_id not in lookups.contact_ids:
        raise NotFound("Contact not found.", details={"contactId": "not found"})
    if contact_key is not None:
        found = lookups.contacts_by_external_id.get(str(contact_key).strip())
        if found is None:
            raise NotFound("Contact not found.", details={"contactExternalId": "not found"})
        item["contact_id"] = found
    return item


@operation("crm:sync")
async def upsert_leads(ctx: Context, items: list[dict[str, Any]]) -> list[UpsertResult]:
    return await run_upsert(
        ctx,
        Lead,
        items,
        type_name="Lead",
        prepare=_prepare_leads,
        clean=_clean_lead_item,
        created_data=lambda row: {"status": str(row.status)},
    )
