"""The CRM's contacts written into a user's Notion database, as a job.

`sync_contacts` records a `NotionSync` and queues its job in one transaction (one sync at
a time per connection: asking again while one is queued or running answers that one).
The job writes, paced by the provider layer (Notion's three requests a second per
integration, 429s waited out), every contact that changed since it was last written:
one with no `NotionContactPage` yet, or whose `updated_at` differs from the one its row
holds (a `full` sync also rewrites the others once). Each contact is one Notion call and
one row written after it, so a run cut anywhere (a killed worker: its job is taken again
after the lease) resumes with the contacts still to do, and a re-run updates the page it
remembers instead of creating a second one. The one window — Notion created the page but
the row was not written — is closed by writing the row first with an empty `page_id`,
and looking such a contact's page up (by its title and email) before creating one.

Properties written: the database's title property gets the name; an email, company and
phone property (by name, else the first of a fitting type) get those when the database has
them. Notion refusing one contact (a validation error) is recorded on the sync
(`NotionSyncError`) and the others go on; Notion refusing the key ends the sync FAILED and
the connection inactive; Notion unavailable (after the layer's retries) fails the job's
try, which comes back later and resumes. Counts move as it goes; `notion.sync_progressed`
events (every few contacts) and `notion.sync_finished` feed `notionSyncStatus`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from tortoise.expressions import F
from tortoise.transactions import in_transaction

from kit.errors import NotFound
from models.contacts import Contact
from models.notion import (
    NotionConnection,
    NotionContactPage,
    NotionSync,
    NotionSyncError,
    NotionSyncStatus,
)
from models.tenancy import scoped
from providers.errors import ProviderError
from providers.notion import NotionClient
from resolvers.context import Context
from resolvers.events import emit, follow, global_id
from resolvers.jobs import JobContext, enqueue, job_handler, now
from resolvers.notion.connection import (
    PERMISSION,
    _person,
    active_connection,
    client_for,
    deactivate,
    key_of,
)
from resolvers.operations import operation

log = logging.getLogger("switchboard.notion")

SYNC_JOB = "notion.sync_contacts"
ACTIVE = (NotionSyncStatus.QUEUED.value, NotionSyncStatus.RUNNING.value)
SETTLED = (NotionSyncStatus.SUCCEEDED.value, NotionSyncStatus.FAILED.value)
PROGRESS_EVERY = 10  # contacts between two progress events
READ_BATCH = 200  # contacts read from the store at a time
MAX_ERRORS_SHOWN = 100


def _event(sync: NotionSync) -> dict[str, Any]:
    return {"sync_id": global_id("NotionSync", sync.id), "status": sync.status}


# Asking for a sync ----------------------------------------------------------------------


@operation(PERMISSION)
async def sync_contacts(ctx: Context, *, full: bool = False) -> NotionSync:
    """Queue a sync of the organization's contacts into the caller's database (or answer
    the one already queued or running)."""
    ctx.require("crm:read")
    connection = await active_connection(ctx)
    async with in_transaction() as conn:
        await NotionConnection.filter(id=connection.id).using_db(conn).select_for_update().first()
        running = (
            await NotionSync.filter(connection_id=connection.id, status__in=ACTIVE)
            .using_db(conn)
            .first()
        )
        if running is not None:
            return running
        sync = await NotionSync.create(
            using_db=conn, tenant_id=connection.tenant_id, connection_id=connection.id, full=full
        )
        await enqueue(
            SYNC_JOB,
            {"sync_id": sync.id},
            tenant_id=connection.tenant_id,
            unique_key=f"notion-sync-{sync.id}",
            connection=conn,
        )
        await emit(connection.tenant_id, "notion.sync_queued", _event(sync), connection=conn)
    return sync


async def _own_sync(ctx: Context, sync_id: int) -> NotionSync:
    tenant_id, user_id = _person(ctx)
    mine = await scoped(NotionConnection, tenant_id).filter(user_id=user_id).first()
    sync = (
        None
        if mine is None
        else await scoped(NotionSync, tenant_id).filter(id=sync_id, connection_id=mine.id).first()
    )
    if sync is None:
        raise NotFound("Notion sync not found.")
    return sync


@operation(PERMISSION)
async def get_sync(ctx: Context, sync_id: int) -> NotionSync:
    """One of the caller's syncs (another user's, or another organization's: NOT_FOUND)."""
    return await _own_sync(ctx, sync_id)


@operation(PERMISSION)
async def last_sync(ctx: Context, connection: NotionConnection) -> NotionSync | None:
    return await NotionSync.filter(connection_id=connection.id).order_by("-id").first()


async def errors_of(sync: NotionSync) -> list[NotionSyncError]:
    return list(
        await NotionSyncError.filter(sync_id=sync.id).order_by("id").limit(MAX_ERRORS_SHOWN)
    )


@operation(PERMISSION)
async def sync_status(ctx: Context, sync_id: int) -> AsyncGenerator[NotionSync, None]:
    """The sync now, then at each change of its counts, until it is settled."""
    sync = await _own_sync(ctx, sync_id)
    wanted = global_id("NotionSync", sync.id)
    stream = follow(
        sync.tenant_id,
        ["notion.sync_*"],
        about=lambda event: event.data.get("sync_id") == wanted,
        load=lambda: NotionSync.filter(id=sync.id).first(),
        state=lambda row: (row.status, row.total, row.created, row.updated, row.failed),
        final=lambda row: row.status in SETTLED,
    )
    try:
        async for row in stream:
            yield row
    finally:
        await stream.aclose()


# The job --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Columns:
    """Which property of the user's database gets which field of a contact."""

    title: str
    email: tuple[str, str] | None = None  # (property name, its type)
    company: tuple[str, str] | None = None
    phone: tuple[str, str] | None = None


def columns_of(properties: Mapping[str, Any]) -> Columns:
    by_type: dict[str, list[str]] = {}
    for name, spec in properties.items():
        if isinstance(spec, dict) and isinstance(spec.get("type"), str):
            by_type.setdefault(spec["type"], []).append(name)
    title = (by_type.get("title") or ["Name"])[0]

    def pick(names: tuple[str, ...], kinds: tuple[str, ...]) -> tuple[str, str] | None:
        for name, spec in properties.items():
            kind = spec.get("type") if isinstance(spec, dict) else None
            if name.strip().lower() in names and kind in kinds:
                return name, str(kind)
        of_kind = by_type.get(kinds[0]) or []
        return (of_kind[0], kinds[0]) if of_kind else None

    return Columns(
        title=title,
        email=pick(("email", "e-mail", "mail"), ("email", "rich_text")),
        company=pick(("company", "organization", "organisation"), ("rich_text", "select")),
        phone=pick(("phone", "phone number", "telephone"), ("phone_number", "rich_text")),
    )


def _value(kind: str, text: str) -> dict[str, Any]:
    if kind in ("title", "rich_text"):
        items = [{"type": "text", "text": {"content": text[:2000]}}] if text else []
        return {kind: items}
    if kind == "select":
        return {"select": {"name": text.replace(",", " ")[:100]} if text else None}
    return {kind: text or None}  # email, phone_number


def contact_properties(contact: Contact, columns: Columns) -> dict[str, Any]:
    props = {columns.title: _value("title", contact.name)}
    for spec, text in (
        (columns.email, contact.email),
        (columns.company, contact.company),
        (columns.phone, contact.phone),
    ):
        if spec is not None:
            props[spec[0]] = _value(spec[1], text or "")
    return props


async def _pending(connection: NotionConnection, sync: NotionSync) -> list[int]:
    """Ids of the contacts this sync still has to write, oldest first (ids and times
    only: the contacts themselves are read a batch at a time as they are written)."""
    written = {
        contact_id: (page_id, contact_updated_at, updated_at)
        for contact_id, page_id, contact_updated_at, updated_at in await NotionContactPage.filter(
            connection_id=connection.id
        ).values_list("contact_id", "page_id", "contact_updated_at", "updated_at")
    }
    todo = []
    for contact_id, updated_at in (
        await scoped(Contact, connection.tenant_id).order_by("id").values_list("id", "updated_at")
    ):
        row = written.get(contact_id)
        if (
            row is None
            or row[0] is None
            or row[1] != updated_at
            or (sync.full and row[2] < sync.created_at)
        ):
            todo.append(contact_id)
    return todo


async def _contacts(tenant_id: int, ids: list[int]) -> AsyncIterator[Contact]:
    for start in range(0, len(ids), READ_BATCH):
        batch = ids[start : start + READ_BATCH]
        found = {c.id: c for c in await scoped(Contact, tenant_id).filter(id__in=batch)}
        for contact_id in batch:
            if contact_id in found:  # deleted meanwhile: nothing to write
                yield found[contact_id]


async def _find_page(
    client: NotionClient, connection: NotionConnection, columns: Columns, contact: Contact
) -> str | None:
    """The page a cut run may have created for `contact` (its title, and email when the
    database has one), not already another contact's."""
    conditions: list[dict[str, Any]] = [
        {"property": columns.title, "title": {"equals": contact.name}}
    ]
    if columns.email is not None and columns.email[1] == "email" and contact.email:
        conditions.append({"property": columns.email[0], "email": {"equals": contact.email}})
    found = await client.query_database(
        connection.database_id, filter={"and": conditions}, page_size=10
    )
    taken = set(
        await NotionContactPage.filter(connection_id=connection.id, page_id__not_isnull=True)
        .exclude(contact_id=contact.id)
        .values_list("page_id", flat=True)
    )
    for page in found.get("results") or []:
        if isinstance(page, dict) and page.get("id") not in taken:
            return str(page["id"])
    return None


async def _write(
    client: NotionClient,
    connection: NotionConnection,
    columns: Columns,
    contact: Contact,
    sync: NotionSync,
) -> None:
    """Write one contact's page, then, in one transaction, remember it and count it on the
    sync as created or updated (a worker killed between the two would otherwise leave a
    written contact uncounted: the resumed run finds it up to date and skips it)."""
    props = contact_properties(contact, columns)
    row = await NotionContactPage.filter(connection_id=connection.id, contact_id=contact.id).first()
    outcome = "updated"
    page_id = row.page_id if row is not None else None
    if row is None:
        row = await NotionContactPage.create(
            tenant_id=connection.tenant_id, connection_id=connection.id, contact_id=contact.id
        )
    elif page_id is None:
        page_id = await _find_page(client, connection, columns, contact)
    if page_id is not None:
        try:
            await client.update_page(page_id, props)
        except ProviderError as err:
            if err.status != 404 and err.vendor_code != "object_not_found":
                raise
            page_id = None  # deleted in Notion meanwhile: write it anew
    if page_id is None:
        page = await client.create_page(connection.database_id, props)
        page_id, outcome = str(page["id"]), "created"
    async with in_transaction() as conn:
        await (
            NotionContactPage.filter(id=row.id)
            .using_db(conn)
            .update(page_id=page_id, contact_updated_at=contact.updated_at, updated_at=now())
        )
        await NotionSync.filter(id=sync.id).using_db(conn).update(**{outcome: F(outcome) + 1})


async def _finish(sync: NotionSync, status: NotionSyncStatus, reason: str | None = None) -> None:
    async with in_transaction() as conn:
        await (
            NotionSync.filter(id=sync.id)
            .using_db(conn)
            .update(status=status.value, reason=reason, finished_at=now())
        )
        sync.status = status.value
        await emit(sync.tenant_id, "notion.sync_finished", _event(sync), connection=conn)


@job_handler(SYNC_JOB, max_attempts=10)
async def run_sync(job: JobContext, payload: dict[str, Any]) -> None:
    sync = await NotionSync.get_or_none(id=int(payload["sync_id"]))
    if sync is None or sync.status in SETTLED:
        return  # done already (a repeated job), or its connection is gone
    connection = await NotionConnection.get_or_none(id=sync.connection_id)
    if connection is None or job.services is None:
        return
    if not connection.active:
        await _finish(sync, NotionSyncStatus.FAILED, connection.inactive_reason or "inactive")
        return
    labels = {"tenant_id": str(sync.tenant_id), "job_id": str(job.job_id)}
    client = client_for(job.services, key_of(job.services.settings, connection), labels=labels)
    try:
        await _run(client, connection, sync)
    except ProviderError as err:
        if err.is_auth_error:
            await deactivate(connection, err)
            await _finish(sync, NotionSyncStatus.FAILED, connection.inactive_reason)
            return
        if err.is_caller_error:  # the database itself is refused (gone, unshared)
            reason = f"Notion refused the database ({err.vendor_code or err.status})"
            await _finish(sync, NotionSyncStatus.FAILED, reason)
            return
        if job.is_last_attempt:
            await _finish(sync, NotionSyncStatus.FAILED, f"Notion unavailable: {err}"[:500])
            return
        raise  # another try later resumes where this one stopped


async def _run(client: NotionClient, connection: NotionConnection, sync: NotionSync) -> None:
    database = await client.retrieve_database(connection.database_id)
    columns = columns_of(database.get("properties") or {})
    todo = await _pending(connection, sync)
    if sync.status == NotionSyncStatus.QUEUED.value:
        sync.status, sync.total, sync.started_at = NotionSyncStatus.RUNNING.value, len(todo), now()
        async with in_transaction() as conn:
            await (
                NotionSync.filter(id=sync.id)
                .using_db(conn)
                .update(status=sync.status, total=sync.total, started_at=sync.started_at)
            )
            await emit(sync.tenant_id, "notion.sync_progressed", _event(sync), connection=conn)
    n = 0
    async for contact in _contacts(sync.tenant_id, todo):
        n += 1
        try:
            await _write(client, connection, columns, contact, sync)
        except ProviderError as err:
            if not err.is_caller_error:
                raise
            await NotionSyncError.create(
                tenant_id=sync.tenant_id, sync_id=sync.id, contact_id=contact.id,
                message=f"{err.vendor_code or err.status}: {err.message}"[:500],
            )  # fmt: skip
            await NotionSync.filter(id=sync.id).update(failed=F("failed") + 1)
        if n % PROGRESS_EVERY == 0:
            await emit(sync.tenant_id, "notion.sync_progressed", _event(sync))
    await _finish(sync, NotionSyncStatus.SUCCEEDED)
