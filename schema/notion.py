"""Notion as each user's second brain: the caller's connection, their database's items
(Notion's own filter and sort objects, paged with Notion's cursors), pages created there,
and the sync of the CRM's contacts into it with its live `notionSyncStatus`."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info

from models.notion import NotionConnection as ConnectionRow
from models.notion import NotionSync as SyncRow
from models.notion import NotionSyncStatus
from resolvers import notion as api
from schema.permissions import mutation, query, subscription
from schema.relay import After, First, PageInfo, decode_id

strawberry.enum(
    NotionSyncStatus,
    description="Where a contact sync is: QUEUED, RUNNING, SUCCEEDED (every contact "
    "written, or refused one by one: see `errors`) or FAILED (stopped: see `reason`).",
)


@strawberry.type(description="A contact Notion refused during a sync (the others went on).")
class NotionSyncContactError:
    contact_id: relay.GlobalID = strawberry.field(description="The contact.")
    message: str = strawberry.field(description="Notion's code and explanation.")


@strawberry.type(description="One run of the sync of the CRM's contacts into Notion.")
class NotionSync:
    id: relay.GlobalID = strawberry.field(description="The sync's id.")
    status: NotionSyncStatus = strawberry.field(description="Where it is.")
    full: bool = strawberry.field(
        description="Every contact is written, not only those changed since the last run."
    )
    total: int = strawberry.field(description="Contacts to write (known once it runs).")
    created: int = strawberry.field(description="Pages created so far.")
    updated: int = strawberry.field(description="Pages updated so far.")
    failed: int = strawberry.field(description="Contacts Notion refused so far.")
    reason: str | None = strawberry.field(description="Why it FAILED.")
    started_at: dt.datetime | None = strawberry.field(description="When it started running.")
    finished_at: dt.datetime | None = strawberry.field(description="When it settled.")
    created_at: dt.datetime = strawberry.field(description="When it was asked for.")
    _row: strawberry.Private[Any] = None

    @classmethod
    def from_row(cls, row: SyncRow) -> NotionSync:
        return cls(
            id=relay.GlobalID("NotionSync", str(row.id)),
            status=NotionSyncStatus(row.status),
            full=row.full,
            total=row.total,
            created=row.created,
            updated=row.updated,
            failed=row.failed,
            reason=row.reason,
            started_at=row.started_at,
            finished_at=row.finished_at,
            created_at=row.created_at,
            _row=row,
        )

    @strawberry.field(description="The contacts Notion refused (the first 100).")
    async def errors(self) -> list[NotionSyncContactError]:
        rows = await api.errors_of(self._row)
        return [
            NotionSyncContactError(
                contact_id=relay.GlobalID("Contact", str(r.contact_id)), message=r.message
            )
            for r in rows
        ]


@strawberry.type(description="The caller's Notion: which database, and whether it works.")
class NotionConnection:
    id: relay.GlobalID = strawberry.field(description="The connection's id.")
    database_id: str = strawberry.field(description="The Notion database pages go to.")
    database_title: str = strawberry.field(description="Its title in Notion.")
    workspace_name: str = strawberry.field(description="The Notion workspace of the key.")
    key_hint: str = strawberry.field(
        description="The key's last four characters (empty for short keys); never the key."
    )
    active: bool = strawberry.field(
        description="False once Notion refused the key; connecting again makes it active."
    )
    inactive_reason: str | None = strawberry.field(description="Why it is inactive.")
    created_at: dt.datetime = strawberry.field(description="When it was first connected.")
    updated_at: dt.datetime = strawberry.field(description="When it last changed.")
    _row: strawberry.Private[Any] = None

    @classmethod
    def from_row(cls, row: ConnectionRow) -> NotionConnection:
        return cls(
            id=relay.GlobalID("NotionConnection", str(row.id)),
            database_id=row.database_id,
            database_title=row.database_title,
            workspace_name=row.workspace_name,
            key_hint=row.key_hint,
            active=row.active,
            inactive_reason=row.inactive_reason,
            created_at=row.created_at,
            updated_at=row.updated_at,
            _row=row,
        )

    @strawberry.field(description="The latest contact sync, if any.")
    async def last_sync(self, info: Info) -> NotionSync | None:
        row = await api.last_sync(info.context, self._row)
        return None if row is None else NotionSync.from_row(row)


@strawberry.type(description="A page of the caller's Notion database, as Notion has it.")
class NotionDatabaseItem:
    id: str = strawberry.field(description="Notion's id of the page.")
    url: str = strawberry.field(description="Where it opens in Notion.")
    title: str = strawberry.field(description="Its title property, as plain text.")
    created_time: str = strawberry.field(description="When it was created (ISO 8601).")
    last_edited_time: str = strawberry.field(description="When it last changed (ISO 8601).")
    properties: JSON = strawberry.field(
        description="Its property values, exactly as Notion answers them."
    )

    @classmethod
    def of(cls, item: api.NotionItem) -> NotionDatabaseItem:
        return cls(
            id=item.id,
            url=item.url,
            title=item.title,
            created_time=item.created_time,
            last_edited_time=item.last_edited_time,
            properties=item.properties,  # type: ignore[arg-type]  # JSON takes any JSON value
        )


@strawberry.type(description="One database item with its cursor.")
class NotionDatabaseItemEdge:
    cursor: str = strawberry.field(description="Opaque position of this item.")
    node: NotionDatabaseItem = strawberry.field(description="The item.")


@strawberry.type(description="A page of the caller's database items, Relay style.")
class NotionDatabaseItemConnection:
    edges: list[NotionDatabaseItemEdge] = strawberry.field(description="The items.")
    page_info: PageInfo = strawberry.field(description="Pagination state.")

    @classmethod
    def of(cls, page: api.ItemPage) -> NotionDatabaseItemConnection:
        return cls(
            edges=[
                NotionDatabaseItemEdge(cursor=c, node=NotionDatabaseItem.of(i))
                for c, i in zip(page.cursors, page.items, strict=True)
            ],
            page_info=PageInfo(
                has_next_page=page.has_next,
                has_previous_page=page.has_previous,
                start_cursor=page.cursors[0] if page.cursors else None,
                end_cursor=page.cursors[-1] if page.cursors else None,
            ),
        )


@strawberry.input(description="The caller's Notion integration key and database.")
class ConnectNotionInput:
    api_key: str = strawberry.field(
        description="The internal integration's secret (checked with Notion, then kept "
        "encrypted; never returned)."
    )
    database_id: str = strawberry.field(
        description="The database (shared with the integration): its id or its link."
    )


@strawberry.type(description="The connection made.")
class ConnectNotionPayload:
    connection: NotionConnection = strawberry.field(description="The connection.")


@strawberry.type(description="Whether there was a connection to forget.")
class DisconnectNotionPayload:
    disconnected: bool = strawberry.field(description="True when one was removed.")


@strawberry.input(description="A page to add to the caller's Notion database.")
class CreateNotionPageInput:
    properties: JSON = strawberry.field(
        description="Notion's property values by property name, e.g. "
        '`{"Name": {"title": [{"text": {"content": "Ada"}}]}}`.'
    )
    content: str | None = strawberry.field(
        default=None, description="Text of the page; blank lines separate paragraphs."
    )


@strawberry.type(description="The page created.")
class CreateNotionPagePayload:
    item: NotionDatabaseItem = strawberry.field(description="The page, as Notion answered.")


@strawberry.input(description="What to sync into the caller's Notion database.")
class SyncContactsToNotionInput:
    full: bool = strawberry.field(
        default=False,
        description="Write every contact again, not only those changed since the last run.",
    )


@strawberry.type(description="The sync queued (or the one already under way).")
class SyncContactsToNotionPayload:
    sync: NotionSync = strawberry.field(description="The sync; follow it with notionSyncStatus.")


FilterArg = Annotated[
    JSON | None,
    strawberry.argument(
        description='Notion\'s filter object (e.g. `{"property": "Company", "rich_text": '
        '{"contains": "acme"}}`, or `and` / `or` of such).'
    ),
]
SortsArg = Annotated[
    JSON | None,
    strawberry.argument(
        description='Notion\'s sort objects (e.g. `[{"property": "Name", "direction": '
        '"ascending"}]`).'
    ),
]


@strawberry.type
class Query:
    @query(operation=api.my_connection, description="The caller's Notion connection, if any.")
    async def notion_connection(self, info: Info) -> NotionConnection | None:
        row = await api.my_connection(info.context)
        return None if row is None else NotionConnection.from_row(row)

    @query(
        operation=api.database_items,
        description="Items of the caller's Notion database, filtered and sorted as Notion "
        "does; a malformed filter is BAD_USER_INPUT.",
    )
    async def notion_database_items(
        self,
        info: Info,
        filter: FilterArg = None,
        sorts: SortsArg = None,
        first: First = None,
        after: After = None,
    ) -> NotionDatabaseItemConnection:
        page = await api.database_items(
            info.context, filter=filter, sorts=sorts, first=first, after=after
        )
        return NotionDatabaseItemConnection.of(page)

    @query(
        operation=api.get_sync,
        description="One of the caller's contact syncs (another user's is NOT_FOUND).",
    )
    async def notion_sync(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="Id of the sync.")],
    ) -> NotionSync:
        return NotionSync.from_row(await api.get_sync(info.context, decode_id(id, "NotionSync")))


@strawberry.type
class Mutation:
    @mutation(
        operation=api.connect_notion,
        description="Connect the caller's Notion: the key is checked with Notion (its bot "
        "user and the database) before it is kept; a refused key or an unknown database is "
        "BAD_USER_INPUT naming the field.",
    )
    async def connect_notion(self, info: Info, input: ConnectNotionInput) -> ConnectNotionPayload:
        row = await api.connect_notion(
            info.context, api_key=input.api_key, database_id=input.database_id
        )
        return ConnectNotionPayload(connection=NotionConnection.from_row(row))

    @mutation(
        operation=api.disconnect_notion,
        description="Forget the caller's Notion connection (its key, contact pages and syncs).",
    )
    async def disconnect_notion(self, info: Info) -> DisconnectNotionPayload:
        return DisconnectNotionPayload(disconnected=await api.disconnect_notion(info.context))

    @mutation(
        operation=api.create_page,
        description="Add a page to the caller's Notion database; properties Notion refuses "
        "are BAD_USER_INPUT with its message.",
    )
    async def create_notion_page(
        self, info: Info, input: CreateNotionPageInput
    ) -> CreateNotionPagePayload:
        item = await api.create_page(
            info.context, properties=input.properties, content=input.content
        )
        return CreateNotionPagePayload(item=NotionDatabaseItem.of(item))

    @mutation(
        operation=api.sync_contacts,
        description="Write the organization's CRM contacts into the caller's Notion database "
        "as pages (name, email, company, phone), only those changed since the last run; a "
        "job, followed with notionSyncStatus.",
    )
    async def sync_contacts_to_notion(
        self, info: Info, input: SyncContactsToNotionInput
    ) -> SyncContactsToNotionPayload:
        row = await api.sync_contacts(info.context, full=input.full)
        return SyncContactsToNotionPayload(sync=NotionSync.from_row(row))


@strawberry.type
class Subscription:
    @subscription(
        operation=api.sync_status,
        description="A contact sync now, then as its counts move; completes once it is "
        "SUCCEEDED or FAILED. Another user's sync is NOT_FOUND.",
    )
    async def notion_sync_status(
        self,
        info: Info,
        id: Annotated[relay.GlobalID, strawberry.argument(description="Id of the sync.")],
    ) -> AsyncGenerator[NotionSync, None]:
        async for row in api.sync_status(info.context, decode_id(id, "NotionSync")):
            yield NotionSync.from_row(row)
