"""Notion as each user's second brain: the connection and the database's items
(`connection`), and the sync of the CRM's contacts into it (`sync`, a job)."""

from resolvers.notion.connection import (
    ItemPage,
    NotionItem,
    connect_notion,
    create_page,
    database_items,
    disconnect_notion,
    my_connection,
)
from resolvers.notion.sync import (
    SYNC_JOB,
    errors_of,
    get_sync,
    last_sync,
    sync_contacts,
    sync_status,
)

__all__ = [
    "SYNC_JOB",
    "ItemPage",
    "NotionItem",
    "connect_notion",
    "create_page",
    "database_items",
    "disconnect_notion",
    "errors_of",
    "get_sync",
    "last_sync",
    "my_connection",
    "sync_contacts",
    "sync_status",
]
