"""Notion as each user's second brain: their connection (key checked with Notion on save,
kept in the vault, never returned), their database's items (Notion's own filter and sort
objects, paged with Notion's cursors), pages created there, and the sync of the CRM's
contacts into it (resolvers/notion_sync.py).

A connection is a person's (one per user and organization): an API key acting for the
organization has none. Calls go to `NOTION_BASE_URL` (empty: api.notion.com, or the
gateway's own sandbox while sandboxes are on) with the user's key as the credential, so
its failures count against that key's breaker only. Notion refusing the key (401/403)
marks the connection inactive with the reason; connecting again makes it active.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from kit.errors import (
    BadUserInput,
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    UpstreamUnavailable,
)
from kit.settings import Settings
from kit.vault import VaultError, vault_for
from models.notion import NotionConnection
from models.tenancy import scoped
from providers import notion
from providers.errors import ProviderError
from providers.notion import NotionClient
from providers.sandbox import has_sandbox
from resolvers.context import Context, Services
from resolvers.operations import operation
from resolvers.upstream import provider_registry, to_gateway_error

PERMISSION = "notion:use"
MAX_KEY = 200
MAX_FILTER_BYTES = 16 * 1024  # a Notion filter or sort list, serialised
MAX_PROPERTIES_BYTES = 256 * 1024  # a page's properties, serialised
DEFAULT_PAGE = 20
_KEY_RE = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces
_HEX32 = re.compile(r"([0-9a-fA-F]{32})(?:[?#].*)?$")


def base_url(settings: Settings) -> str:
    if settings.notion_base_url:
        return settings.notion_base_url.rstrip("/")
    if settings.sandboxes_enabled and has_sandbox(notion.PROVIDER):
        return f"{settings.base_url}/sandbox/{notion.PROVIDER}"
    return notion.API_URL


def client_for(
    services: Services, api_key: str, *, labels: Mapping[str, str] | None = None
) -> NotionClient:
    """A Notion client for a user's key: the key's own breaker, the operator's base URL."""
    return (
        provider_registry(services)
        .notion()
        .client(api_key, base_url=base_url(services.settings), own_credential=True, labels=labels)
    )


def database_id_of(text: str) -> str | None:
    """The database id in what a user pasted: a UUID (with or without dashes) or a Notion
    link ending in the 32 hex digits; None when there is none."""
    value = (text or "").strip()
    if notion.is_id(value):
        raw = value.replace("-", "").lower()
    else:
        found = _HEX32.search(value) if value.startswith("https://") else None
        if found is None:
            return None
        raw = found.group(1).lower()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def _person(ctx: Context) -> tuple[int, int]:
    principal = ctx.require(PERMISSION)
    if principal.user_id is None or principal.api_key_id is not None:
        raise Forbidden("A Notion connection is a person's: sign in as the user.")
    return principal.tenant_id, principal.user_id


def _labels(ctx: Context, tenant_id: int) -> dict[str, str]:
    return {"request_id": ctx.request_id, "tenant_id": str(tenant_id)}


def _plain_title(items: Any) -> str:
    if not isinstance(items, list):
        return ""
    return "".join(str(t.get("plain_text", "")) for t in items if isinstance(t, dict))[:300]


def key_of(settings: Settings, row: NotionConnection) -> str:
    try:
        return vault_for(settings.vault_keys).decrypt(row.api_key)
    except VaultError:
        raise UpstreamUnavailable(
            "The stored Notion key cannot be read; ask an operator.", provider=notion.PROVIDER
        ) from None


# Connect and disconnect -------------------------------------------------------------------


@operation(PERMISSION)
async def connect_notion(ctx: Context, *, api_key: str, database_id: str) -> NotionConnection:
    """Check the key with Notion (its bot user, then the database) and keep it, encrypted,
    as the caller's connection (replacing theirs, active again)."""
    tenant_id, user_id = _person(ctx)
    problems: dict[str, str] = {}
    key = (api_key or "").strip()
    if not key or len(key) > MAX_KEY or not _KEY_RE.match(key):
        problems["apiKey"] = f"must be a Notion integration key (1 to {MAX_KEY} characters)"
    db_id = database_id_of(database_id)
    if db_id is None:
        problems["databaseId"] = "must be a Notion database id or link"
    if problems:
        raise BadUserInput("The Notion connection is not valid.", details=problems)
    assert db_id is not None
    client = client_for(ctx.services, key, labels=_labels(ctx, tenant_id))
    try:
        me = await client.me()
    except ProviderError as err:
        if err.is_auth_error or err.is_caller_error:
            raise BadUserInput(
                "Notion refused the key.",
                details={"apiKey": f"was refused by Notion ({err.vendor_code or err.status})"},
            ) from None
        raise to_gateway_error(err, field="apiKey") from None
    try:
        database = await client.retrieve_database(db_id)
    except ProviderError as err:
        if err.status in (400, 403, 404):
            raise BadUserInput(
                "Notion has no such database for this key.",
                details={"databaseId": "was not found, or is not shared with the integration"},
            ) from None
        raise to_gateway_error(err, field="databaseId") from None
    bot = me.get("bot") if isinstance(me.get("bot"), dict) else {}
    values = {
        "api_key": vault_for(ctx.settings.vault_keys).encrypt(key),
        "key_hint": key[-4:] if len(key) >= 12 else "",
        "database_id": db_id,
        "database_title": _plain_title(database.get("title")),
        "workspace_name": str((bot or {}).get("workspace_name") or "")[:300],
        "active": True,
        "inactive_reason": None,
    }
    for _ in range(2):  # a racing connect of the same person: the second one updates
        try:
            async with in_transaction() as conn:
                row = (
                    await scoped(NotionConnection, tenant_id)
                    .filter(user_id=user_id)
                    .using_db(conn)
                    .select_for_update()
                    .first()
                )
                if row is None:
                    return await NotionConnection.create(
                        using_db=conn, tenant_id=tenant_id, user_id=user_id, **values
                    )
                row.update_from_dict(values)
                await row.save(using_db=conn)
                return row
        except IntegrityError:
            continue  # the other request created it first: update it
    raise Conflict("The connection changed meanwhile; try again.")


@operation(PERMISSION)
async def disconnect_notion(ctx: Context) -> bool:
    """Forget the caller's connection (its key, its contact pages and sync history)."""
    tenant_id, user_id = _person(ctx)
    removed = await scoped(NotionConnection, tenant_id).filter(user_id=user_id).delete()
    return bool(removed)


@operation(PERMISSION)
async def my_connection(ctx: Context) -> NotionConnection | None:
    tenant_id, user_id = _person(ctx)
    return await scoped(NotionConnection, tenant_id).filter(user_id=user_id).first()


async def active_connection(ctx: Context) -> NotionConnection:
    tenant_id, user_id = _person(ctx)
    row = await scoped(NotionConnection, tenant_id).filter(user_id=user_id).first()
    if row is None:
        raise NotFound("Connect Notion first (connectNotion).")
    if not row.active:
        raise BadUserInput(
            "The Notion connection is inactive: connect again with a working key.",
            details={"connection": row.inactive_reason or "inactive"},
        )
    return row


async def deactivate(row: NotionConnection, err: ProviderError) -> None:
    """Notion refused the key: the connection stays, inactive, with the reason."""
    reason = f"Notion refused the key ({err.vendor_code or err.status})"[:500]
    await NotionConnection.filter(id=row.id).update(active=False, inactive_reason=reason)
    row.active, row.inactive_reason = False, reason


async def _call_failed(row: NotionConnection, err: ProviderError, field: str) -> GatewayError:
    if err.is_auth_error:
        await deactivate(row, err)
    return to_gateway_error(err, field=field)


# Database items -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotionItem:
    """A page of the user's database, as Notion answered it."""

    id: str
    url: str
    title: str
    created_time: str
    last_edited_time: str
    properties: dict[str, Any]

    @classmethod
    def of(cls, page: Mapping[str, Any]) -> NotionItem:
        props = page.get("properties") if isinstance(page.get("properties"), dict) else {}
        title = ""
        for value in (props or {}).values():
            if isinstance(value, dict) and value.get("type") == "title":
                title = _plain_title(value.get("title"))
        return cls(
            id=str(page.get("id") or ""),
            url=str(page.get("url") or ""),
            title=title,
            created_time=str(page.get("created_time") or ""),
            last_edited_time=str(page.get("last_edited_time") or ""),
            properties=dict(props or {}),
        )


@dataclass(frozen=True, slots=True)
class ItemPage:
    """A page of database items; each item's cursor resumes right after it."""

    items: list[NotionItem]
    cursors: list[str]
    has_next: bool
    has_previous: bool


def _cursor(next_start: str | None) -> str:
    raw = json.dumps({"n": next_start}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(after: str) -> tuple[bool, str | None]:
    """(more to read, Notion's start_cursor) from one of our item cursors."""
    try:
        padded = after + "=" * (-len(after) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        start = data["n"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadUserInput(
            "The cursor is not valid.", details={"after": "is not a cursor"}
        ) from None
    if start is None:
        return False, None
    if not isinstance(start, str) or not notion.is_id(start):
        raise BadUserInput("The cursor is not valid.", details={"after": "is not a cursor"})
    return True, start


def _json_object(value: Any, field: str, *, kind: type, limit: int) -> Any:
    if value is None:
        return None
    if isinstance(value, str):  # JSON sent as a string: read it, refuse it when malformed
        try:
            value = json.loads(value)
        except ValueError:
            raise BadUserInput(
                f"The {field} is not valid JSON.", details={field: "is not valid JSON"}
            ) from None
    name = "an object" if kind is dict else "a list"
    if not isinstance(value, kind):
        raise BadUserInput(f"The {field} is not valid.", details={field: f"must be {name}"})
    if len(json.dumps(value)) > limit:
        raise BadUserInput(
            f"The {field} is too large.", details={field: f"must be at most {limit} bytes"}
        )
    if "\x00" in json.dumps(value, ensure_ascii=False):
        raise BadUserInput(f"The {field} is not valid.", details={field: "contains NUL"})
    return value


@operation(PERMISSION)
async def database_items(
    ctx: Context,
    *,
    filter: Any = None,
    sorts: Any = None,
    first: int | None = None,
    after: str | None = None,
) -> ItemPage:
    """Items of the caller's database, filtered and sorted by Notion's own objects."""
    where = _json_object(filter, "filter", kind=dict, limit=MAX_FILTER_BYTES)
    order = _json_object(sorts, "sorts", kind=list, limit=MAX_FILTER_BYTES)
    size = first if first is not None else DEFAULT_PAGE
    if not 1 <= size <= notion.MAX_PAGE_SIZE:
        raise BadUserInput(
            "The page size is not valid.",
            details={"first": f"must be between 1 and {notion.MAX_PAGE_SIZE}"},
        )
    more, start = (True, None) if after is None else _decode_cursor(after)
    row = await active_connection(ctx)
    if not more:
        return ItemPage([], [], False, True)
    client = client_for(ctx.services, key_of(ctx.settings, row), labels=_labels(ctx, row.tenant_id))
    try:
        data = await client.query_database(
            row.database_id, filter=where, sorts=order, start_cursor=start, page_size=size
        )
    except ProviderError as err:
        raise await _call_failed(row, err, "filter") from None
    results = [r for r in data.get("results") or [] if isinstance(r, dict)]
    items = [NotionItem.of(r) for r in results]
    has_more = bool(data.get("has_more"))
    following = [i.id for i in items[1:]] + [data.get("next_cursor") if has_more else None]
    cursors = [_cursor(n) for n in following[: len(items)]]
    return ItemPage(items, cursors, has_more and bool(items), after is not None)


@operation(PERMISSION)
async def create_page(ctx: Context, *, properties: Any, content: str | None = None) -> NotionItem:
    """A page in the caller's database: Notion's property values, and optional text as
    paragraphs."""
    props = _json_object(properties, "properties", kind=dict, limit=MAX_PROPERTIES_BYTES)
    if not props:
        raise BadUserInput(
            "A page needs properties.", details={"properties": "must be a non-empty object"}
        )
    children = None
    if content:
        if "\x00" in content:
            raise BadUserInput("The content is not valid.", details={"content": "contains NUL"})
        children = paragraphs(content)
        if len(children) > 100:
            raise BadUserInput(
                "The content is too long.", details={"content": "at most 100 paragraphs"}
            )
    row = await active_connection(ctx)
    client = client_for(ctx.services, key_of(ctx.settings, row), labels=_labels(ctx, row.tenant_id))
    try:
        page = await client.create_page(row.database_id, props, children=children)
    except ProviderError as err:
        raise await _call_failed(row, err, "properties") from None
    return NotionItem.of(page)


def paragraphs(text: str, limit: int = 2000) -> list[dict[str, Any]]:
    """Text as Notion paragraph blocks (one per paragraph, split at Notion's 2000)."""
    blocks = []
    for para in (p.strip() for p in text.split("\n\n")):
        for i in range(0, len(para), limit):
            piece = para[i : i + limit]
            blocks.append({
                "object": "block", "type": "paragraph",
                "paragraph": {"rich_text": [{"type": "text", "text": {"content": piece}}]},
            })  # fmt: skip
    return blocks
