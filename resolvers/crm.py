"""What every CRM area (contacts, leads, tasks) shares: input checks that collect every
problem into one BAD_USER_INPUT, change events, ordering, tenant-member and contact
checks for owner/assignee/contact ids, the per-request DataLoaders for users and
contacts, and the batch upsert engine used by CRM sync (insert-or-update per item under
concurrency)."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Subquery
from tortoise.models import Model
from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, Conflict, GatewayError, NotFound
from models.accounts import User
from models.contacts import Contact
from models.members import Membership
from models.tenancy import scoped
from resolvers.context import Context
from resolvers.events import emit
from resolvers.pagination import Order

CREATED, UPDATED, UNCHANGED, FAILED = "CREATED", "UPDATED", "UNCHANGED", "FAILED"


# prepare(tenant_id, items) -> lookups; clean(item, existing_row, lookups) -> db values
Prepare = Callable[[int, list[dict[str, Any]]], Awaitable[Any]]
Clean = Callable[[dict[str, Any], Any, Any], dict[str, Any]]


MAX_UPSERT_ITEMS = 500


ITEM_ERROR = "_error"  # an item key the schema sets when it could not decode the item


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Problems:
    """Collects what is wrong with an input, field by field, then raises once."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.details: dict[str, str] = {}

    def add(self, field_name: str, problem: str) -> None:
        self.details.setdefault(self.prefix + camel(field_name), problem)

    def check(self) -> None:
        if self.details:
            summary = "; ".join(f"{k}: {v}" for k, v in self.details.items())
            raise BadUserInput(f"Invalid input: {summary}.", details=dict(self.details))


def text(
    data: dict[str, Any],
    name: str,
    problems: Problems,
    *,
    max_length: int,
    required: bool = False,
    creating: bool = False,
) -> None:
    """Strip `data[name]` in place and check its length; absent keys stay absent."""
    if name not in data:
        if required and creating:
            problems.add(name, "is required")
        return
    value = data[name]
    if value is None:
        if required:
            problems.add(name, "cannot be null")
        else:
            data[name] = ""
        return
    value = str(value).strip()
    if required and not value:
        problems.add(name, "cannot be empty")
    elif len(value) > max_length:
        problems.add(name, f"must be at most {max_length} characters")
    data[name] = value


def external_id(data: dict[str, Any], problems: Problems, *, required: bool = False) -> None:
    """External ids: null clears, otherwise 1 to 200 characters after stripping."""
    if "external_id" not in data:
        if required:
            problems.add("external_id", "is required")
        return
    value = data["external_id"]
    if value is None:
        if required:
            problems.add("external_id", "cannot be null")
        return
    value = str(value).strip()
    if not value:
        problems.add("external_id", "cannot be empty")
    elif len(value) > 200:
        problems.add("external_id", "must be at most 200 characters")
    data["external_id"] = value


# Stored column → the field name a GraphQL client knows it by, where they differ.
API_NAMES = {"amount": "value"}


def global_id(type_name: str, row_id: int) -> str:
    """The node's global id exactly as the API shows it (base64 of `Type:id`)."""
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def api_fields(names: Iterable[str]) -> list[str]:
    """Changed columns as sorted API field names (`owner_id` → `ownerId`, `amount` → `value`)."""
    return sorted({camel(API_NAMES.get(n, n)) for n in names if n != "updated_at"})


def changed(row: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The part of `values` that differs from what `row` holds."""
    return {k: v for k, v in values.items() if getattr(row, k) != v}


async def emit_change(
    conn: BaseDBAsyncClient,
    tenant_id: int,
    event_type: str,
    type_name: str,
    row_id: int,
    **data: Any,
) -> None:
    """Record a domain event about one node in the caller's transaction (`conn`).

    Data: the node's global id plus what changed (field names, status moves), never
    field values: events reach webhooks and streams."""
    await emit(tenant_id, event_type, {"id": global_id(type_name, row_id), **data}, connection=conn)


def order_of(field_name: str, descending: bool, allowed: frozenset[str]) -> Order:
    if field_name not in allowed:
        raise BadUserInput(
            f"Cannot order by {field_name}.", details={"orderBy": f"unknown field {field_name}"}
        )
    return Order(field=field_name, descending=descending)


def _member_ids(tenant_id: int, user_ids: Iterable[int]) -> Any:
    return Membership.filter(tenant_id=tenant_id, user_id__in=list(user_ids)).values("user_id")


async def members_among(tenant_id: int, user_ids: Iterable[int | None]) -> set[int]:
    """The ids in `user_ids` that belong to members of the tenant (one query)."""
    ids = {i for i in user_ids if i is not None}
    if not ids:
        return set()
    rows = await Membership.filter(tenant_id=tenant_id, user_id__in=list(ids)).values_list(
        "user_id", flat=True
    )
    return {int(r) for r in rows}  # type: ignore[call-overload]


async def require_member(tenant_id: int, user_id: int | None, field_name: str) -> None:
    if user_id is not None and user_id not in await members_among(tenant_id, [user_id]):
        raise NotFound("User not found.", field=field_name)


async def require_contact(tenant_id: int, contact_id: int | None, field_name: str) -> None:
    if (
        contact_id is not None
        and not await scoped(Contact, tenant_id).filter(id=contact_id).exists()
    ):
        raise NotFound("Contact not found.", field=field_name)


def users_loader(ctx: Context) -> Any:
    existing = ctx.known_loader("crm.users")  # called once per row of a list: no closure
    if existing is not None:
        return existing
    tenant_id = ctx.tenant_id

    async def batch(ids: list[int]) -> list[User | None]:
        # One statement: users that are members of this tenant.
        rows = await User.filter(id__in=Subquery(_member_ids(tenant_id, set(ids)))).only(
            "id", "email", "name", "email_verified_at", "created_at"
        )
        found = {u.id: u for u in rows}
        return [found.get(i) for i in ids]

    return ctx.loader("crm.users", batch)


async def load_user(ctx: Context, user_id: int | None) -> User | None:
    """A member of the caller's tenant by id, batched per request; None when absent."""
    if user_id is None:
        return None
    result: User | None = await users_loader(ctx).load(user_id)
    return result


def by_id_loader(ctx: Context, name: str, model: type[Any]) -> Any:
    tenant_id = ctx.tenant_id

    async def batch(ids: list[int]) -> list[Any]:
        found = {r.id: r for r in await scoped(model, tenant_id).filter(id__in=list(set(ids)))}
        return [found.get(i) for i in ids]

    return ctx.loader(name, batch)


async def load_contact(ctx: Context, contact_id: int | None) -> Contact | None:
    if contact_id is None:
        return None
    result: Contact | None = await by_id_loader(ctx, "crm.contacts", Contact).load(contact_id)
    return result


async def check_unique_external_id(
    model: type[Any], tenant_id: int, value: str | None, exclude_id: int | None = None
) -> None:
    if value is None:
        return
    qs = scoped(model, tenant_id).filter(external_id=value)
    if exclude_id is not None:
        qs = qs.exclude(id=exclude_id)
    if await qs.exists():
        raise BadUserInput(
            "externalId is already used.", details={"externalId": "is already used by another row"}
        )


async def save_unique(row: Model, **kwargs: Any) -> None:
    """Save; a unique externalId lost to a concurrent writer is bad input, not a crash."""
    try:
        await row.save(**kwargs)
    except IntegrityError:
        raise BadUserInput(
            "externalId is already used.", details={"externalId": "is already used by another row"}
        ) from None


@dataclass
class UpsertResult:
    index: int
    external_id: str | None
    outcome: str
    row: Any = None
    error: GatewayError | None = None


async def run_upsert(
    ctx: Context,
    model: type[Any],
    items: list[dict[str, Any]],
    *,
    type_name: str,
    prepare: Prepare,
    clean: Clean,
    created_data: Callable[[Any], dict[str, Any]] | None = None,
) -> list[UpsertResult]:
    """Create or update rows by external id: one read for all existing rows, then writes
    in one transaction (insert-or-skip, bulk update, one `<type>.created` /
    `<type>.updated` event per created or changed item). One bad item fails alone;
    unchanged items emit nothing.

    Concurrent batches may bring the same new external ids: the insert skips the ids
    another writer created first (`ON CONFLICT DO NOTHING`, which on PostgreSQL waits
    for that writer's commit). Then every row of the batch is read again, locked, and
    each item is judged against the row as stored now (those that lost their insert
    become updates), in the same transaction. So no batch fails for a race, each id is
    CREATED (with its event) by exactly one batch, and an update never writes back a
    value read before a concurrent writer changed it."""
    tenant_id = ctx.require("crm:sync").tenant_id
    if len(items) > MAX_UPSERT_ITEMS:
        raise BadUserInput(
            f"At most {MAX_UPSERT_ITEMS} items per call.",
            details={"items": f"at most {MAX_UPSERT_ITEMS} items per call, got {len(items)}"},
        )
    return await _upsert_batch(tenant_id, model, type_name, items, prepare, clean, created_data)


async def _upsert_batch(
    tenant_id: int,
    model: type[Any],
    type_name: str,
    raw_items: list[dict[str, Any]],
    prepare: Prepare,
    clean: Clean,
    created_data: Callable[[Any], dict[str, Any]] | None,
) -> list[UpsertResult]:
    items = [dict(item) for item in raw_items]  # the key checks normalise them
    results: list[UpsertResult] = []
    keys: list[str | None] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        problems = Problems()
        external_id(item, problems, required=True)
        key = item.get("external_id") if not problems.details else None
        if key is not None and key in seen:
            problems.add("external_id", "appears more than once in this batch")
            key = None
        error: GatewayError | None = item.pop(ITEM_ERROR, None)
        try:
            problems.check()
        except BadUserInput as exc:
            error = exc
        if error is not None:
            key = None
        if key is not None:
            seen.add(key)
        keys.append(key)
        results.append(
            UpsertResult(index, _raw_key(raw_items[index]), FAILED if error else "", error=error)
        )
    existing = (
        {
            r.external_id: r
            for r in await scoped(model, tenant_id).filter(external_id__in=sorted(seen))
        }
        if seen
        else {}
    )
    lookups = await prepare(tenant_id, [i for i, k in zip(items, keys, strict=True) if k])
    first = _Judge(clean, lookups, tenant_id, model)
    for result, item, key in zip(results, items, keys, strict=True):
        if key is not None:
            first.judge(result, item, existing.get(key))
    if not (first.to_create or first.to_update):
        return results
    area = type_name.lower()
    async with in_transaction() as conn:
        new = sorted(first.to_create, key=lambda r: r.external_id)  # one lock order for all
        won = await insert_new(conn, model, new) if new else set()
        # Every row of the batch as it is now, locked (PostgreSQL) in one order for all
        # writers: what a concurrent batch wrote since the first read, or created first,
        # is judged here (its rows become updates), never overwritten from a stale read.
        stored = {
            r.external_id: r
            for r in await scoped(model, tenant_id)
            .filter(external_id__in=sorted(seen))
            .order_by("id")
            .select_for_update()
            .using_db(conn)
        }
        final = _Judge(clean, lookups, tenant_id, model)
        for result, item, key in zip(results, items, keys, strict=True):
            if key is None:
                continue
            if key in won:
                result.outcome, result.row = CREATED, stored[key]
            elif key in stored:
                final.judge(result, item, stored[key])
            elif result.outcome != FAILED:  # pragma: no cover - deleted by another writer
                result.outcome, result.row = FAILED, None
                result.error = Conflict("The row changed while it was written; send again.")
        # One UPDATE per set of changed fields: a row is written only where it changed.
        by_fields: dict[tuple[str, ...], list[Any]] = {}
        for row in final.to_update:
            by_fields.setdefault(tuple(final.updated_fields[row.id]), []).append(row)
        for names, rows in by_fields.items():
            await model.bulk_update(rows, [*names, "updated_at"], batch_size=100, using_db=conn)
        for result in results:
            if result.outcome == CREATED:
                extra = created_data(result.row) if created_data else {}
                await emit_change(
                    conn, tenant_id, f"{area}.created", type_name, result.row.id, **extra
                )
            elif result.outcome == UPDATED:
                await emit_change(
                    conn,
                    tenant_id,
                    f"{area}.updated",
                    type_name,
                    result.row.id,
                    fields=api_fields(final.updated_fields[result.row.id]),
                )
    return results


class _Judge:
    """Decides each item's outcome against the stored row, and collects the writes."""

    def __init__(self, clean: Clean, lookups: Any, tenant_id: int, model: type[Any]) -> None:
        self.clean = clean
        self.lookups = lookups
        self.tenant_id = tenant_id
        self.model = model
        self.to_create: list[Any] = []
        self.to_update: list[Any] = []
        self.updated_fields: dict[int, list[str]] = {}

    def judge(self, result: UpsertResult, item: dict[str, Any], current: Any) -> None:
        """Set `result` to CREATED, UPDATED, UNCHANGED or FAILED against `current` (the
        stored row, or None), cleaning a copy of the item (cleaning mutates it, and an
        item is judged twice: before the transaction, and against the locked row)."""
        item = dict(item)
        try:
            values = self.clean(item, current, self.lookups)
        except GatewayError as exc:
            result.outcome, result.row, result.error = FAILED, None, exc
            return
        result.error = None
        if current is None:
            result.outcome = CREATED
            result.row = self.model(tenant_id=self.tenant_id, **values)
            self.to_create.append(result.row)
            return
        diff = changed(current, values)
        if diff:
            current.update_from_dict(diff)
            self.to_update.append(current)
            self.updated_fields[current.id] = sorted(diff)
            result.outcome = UPDATED
        else:
            result.outcome = UNCHANGED
        result.row = current


async def insert_new(conn: BaseDBAsyncClient, model: type[Any], rows: list[Any]) -> set[str]:
    """INSERT the rows, skipping those whose (tenant_id, external_id) is stored already,
    in one statement on PostgreSQL and SQLite; the external ids actually inserted."""
    meta = model._meta
    names = [n for n in meta.fields_db_projection if n != meta.pk_attr]
    columns = ", ".join(f'"{meta.fields_db_projection[n]}"' for n in names)
    postgres = conn.capabilities.dialect == "postgres"
    values: list[Any] = []
    tuples = []
    for row in rows:
        marks = []
        for name in names:
            values.append(meta.fields_map[name].to_db_value(getattr(row, name), row))
            marks.append(f"${len(values)}" if postgres else "?")
        tuples.append(f"({', '.join(marks)})")
    # Identifiers come from the model's metadata; every value is a bound parameter.
    sql = (
        f'INSERT INTO "{meta.db_table}" ({columns}) VALUES {", ".join(tuples)} '  # noqa: S608
        "ON CONFLICT (tenant_id, external_id) DO NOTHING RETURNING external_id"
    )
    inserted = await conn.execute_query_dict(sql, values)  # execute_query drops RETURNING rows
    return {str(r["external_id"]) for r in inserted}


def _raw_key(item: dict[str, Any]) -> str | None:
    value = item.get("external_id")
    return None if value is None else str(value)
