"""Knowledge sources of a tenant: added (a URL, an uploaded document, the caller's Notion
database), indexed by a job, refreshed, removed with their chunks.

A source moves PENDING → INDEXING → READY, or FAILED with the reason; each move is a
`knowledge.source_changed` event (`knowledgeSourceStatus` follows them). Indexing reads
the content (extract.py), cuts it into chunks with their position, embeds them with the
tenant's OpenAI credential (its own key, the system key, or the sandbox) and replaces
the source's chunks in one transaction, so a refresh that fails leaves the old chunks
searchable. Full-text search rows follow the chunks (the store's own index, migration
0013).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from tortoise.transactions import in_transaction

from kit.errors import BadUserInput, Conflict
from kit.ssrf import UnsafeDestination, check_destination
from models.files import File, FileStatus
from models.knowledge import KnowledgeChunk, KnowledgeSource, SourceKind, SourceStatus
from models.notion import NotionConnection
from models.tenancy import get_scoped, scoped
from providers.errors import ProviderError
from providers.notion import NotionClient
from resolvers.context import Context, Services
from resolvers.events import emit, follow, global_id
from resolvers.files import register_reference_check
from resolvers.jobs import JobContext, enqueue, job_handler, now
from resolvers.knowledge import embeddings
from resolvers.knowledge.extract import Extracted, Unreadable, chunk, extract
from resolvers.knowledge.fetch import PROVIDER as WEB
from resolvers.knowledge.fetch import fetch
from resolvers.notion.connection import client_for, key_of
from resolvers.operations import operation
from resolvers.pagination import Page, page_of
from resolvers.storage import storage_of
from resolvers.upstream import provider_registry

log = logging.getLogger("switchboard.knowledge")

INDEX_JOB = "knowledge.index_source"
MANAGE = "knowledge:manage"
READ = "knowledge:read"
MAX_URL = 2000
MAX_NOTION_PAGES = 200  # pages of a Notion database indexed
MAX_NOTION_BLOCKS = 300  # blocks read from one page
SETTLED = (SourceStatus.READY.value, SourceStatus.FAILED.value)


def _event(row: KnowledgeSource) -> dict[str, Any]:
    return {"source_id": global_id("KnowledgeSource", row.id), "status": row.status}


async def _queue(row: KnowledgeSource, conn: Any) -> None:
    await enqueue(
        INDEX_JOB,
        {"source_id": row.id},
        tenant_id=row.tenant_id,
        unique_key=f"knowledge-index-{row.id}-{uuid.uuid4().hex[:8]}",
        connection=conn,
    )
    await emit(row.tenant_id, "knowledge.source_changed", _event(row), connection=conn)


# Adding, refreshing, removing -------------------------------------------------------------


@operation(MANAGE)
async def add_source(
    ctx: Context,
    *,
    url: str | None = None,
    file_id: int | None = None,
    notion: bool = False,
    title: str | None = None,
) -> KnowledgeSource:
    """A new source (exactly one of a URL, an uploaded document, or the caller's Notion
    database), PENDING, its indexing job queued in the same transaction."""
    principal = ctx.require(MANAGE)
    tenant_id = principal.tenant_id
    given = [name for name, v in (("url", url), ("fileId", file_id), ("notion", notion)) if v]
    if len(given) != 1:
        raise BadUserInput(
            "Give exactly one of url, fileId or notion.",
            details={"input": "exactly one of url, fileId, notion"},
        )
    name = (title or "").strip()
    if len(name) > 300 or "\x00" in name:
        raise BadUserInput("The title is not valid.", details={"title": "at most 300 characters"})
    values: dict[str, Any] = {"title": name}
    if url is not None:
        text = url.strip()
        if len(text) > MAX_URL:
            raise BadUserInput("The URL is too long.", details={"url": f"at most {MAX_URL}"})
        try:
            target = await check_destination(text, ctx.settings.outbound_policy())
        except UnsafeDestination as exc:
            raise exc.for_field("url") from None
        values |= {"kind": SourceKind.URL.value, "url": target.url, "title": name or target.url}
    elif file_id is not None:
        row = await get_scoped(File, tenant_id, file_id)
        if row.status != FileStatus.READY.value:
            raise BadUserInput("The file is not uploaded yet.", details={"fileId": "not ready"})
        values |= {
            "kind": SourceKind.DOCUMENT.value,
            "file_id": row.id,
            "title": name or row.name,
            "content_type": row.content_type,
        }
    else:
        if principal.user_id is None:
            raise BadUserInput("Only a person has a Notion connection.", details={"notion": "no"})
        connection = await (
            scoped(NotionConnection, tenant_id).filter(user_id=principal.user_id).first()
        )
        if connection is None or not connection.active:
            raise BadUserInput(
                "Connect Notion first.", details={"notion": "no active Notion connection"}
            )
        values |= {
            "kind": SourceKind.NOTION.value,
            "notion_connection_id": connection.id,
            "title": name or connection.database_title or "Notion",
        }
    async with in_transaction() as conn:
        source = await KnowledgeSource.create(
            using_db=conn, tenant_id=tenant_id, created_by_id=principal.user_id, **values
        )
        await _queue(source, conn)
    return source


@operation(MANAGE)
async def refresh_source(ctx: Context, source_id: int) -> KnowledgeSource:
    """Index the source again (PENDING); refused while it is being indexed."""
    tenant_id = ctx.require(MANAGE).tenant_id
    async with in_transaction() as conn:
        row = await get_scoped(KnowledgeSource, tenant_id, source_id, for_update=True)
        if row.status not in SETTLED:
            raise Conflict("The source is being indexed already.")
        row.status, row.reason = SourceStatus.PENDING.value, None
        await row.save(using_db=conn, update_fields=["status", "reason", "updated_at"])
        await _queue(row, conn)
    return row


@operation(MANAGE)
async def remove_source(ctx: Context, source_id: int) -> int:
    """Remove the source and its chunks; answers the chunks removed."""
    tenant_id = ctx.require(MANAGE).tenant_id
    async with in_transaction() as conn:
        row = await get_scoped(KnowledgeSource, tenant_id, source_id, for_update=True)
        gone = await KnowledgeChunk.filter(source_id=row.id).using_db(conn).delete()
        await row.delete(using_db=conn)
        row.status = "REMOVED"
        await emit(tenant_id, "knowledge.source_changed", _event(row), connection=conn)
    return int(gone)


@operation(READ)
async def list_sources(ctx: Context, *, first: int | None, after: str | None) -> Page[Any]:
    tenant_id = ctx.require(READ).tenant_id
    return await page_of(ctx, scoped(KnowledgeSource, tenant_id), first=first, after=after)


@operation(READ)
async def get_source(ctx: Context, source_id: int) -> KnowledgeSource:
    return await get_scoped(KnowledgeSource, ctx.require(READ).tenant_id, source_id)


async def load_sources(ctx: Context, ids: list[int]) -> dict[int, KnowledgeSource]:
    tenant_id = ctx.require(READ).tenant_id
    rows = await scoped(KnowledgeSource, tenant_id).filter(id__in=list(set(ids)))
    return {r.id: r for r in rows}


@operation(READ)
async def source_status(ctx: Context, source_id: int) -> AsyncGenerator[KnowledgeSource, None]:
    """The source now, then at each move, until READY or FAILED (or removed)."""
    row = await get_source(ctx, source_id)
    wanted = global_id("KnowledgeSource", row.id)
    stream = follow(
        row.tenant_id,
        ["knowledge.source_changed"],
        about=lambda event: event.data.get("source_id") == wanted,
        load=lambda: KnowledgeSource.filter(id=row.id, tenant_id=row.tenant_id).first(),
        state=lambda r: (r.status, r.chunk_count, r.reason),
        final=lambda r: r.status in SETTLED,
    )
    try:
        async for current in stream:
            yield current
    finally:
        await stream.aclose()


@register_reference_check
async def _files_in_use(tenant_id: int, file_id: int) -> list[str]:
    rows = await scoped(KnowledgeSource, tenant_id).filter(file_id=file_id)
    return [f"knowledge source {r.title or r.id}" for r in rows]


# Indexing ---------------------------------------------------------------------------------


class Failed(Exception):
    """The source cannot be indexed as it is (the reason is shown on it)."""


async def _move(row: KnowledgeSource, status: SourceStatus, **values: Any) -> None:
    async with in_transaction() as conn:
        await KnowledgeSource.filter(id=row.id).using_db(conn).update(status=status.value, **values)
        row.status = status.value
        await emit(row.tenant_id, "knowledge.source_changed", _event(row), connection=conn)


@job_handler(INDEX_JOB, max_attempts=5)
async def index_job(job: JobContext, payload: dict[str, Any]) -> None:
    row = await KnowledgeSource.get_or_none(id=int(payload["source_id"]))
    if row is None or job.services is None or row.status == SourceStatus.READY.value:
        return  # removed meanwhile, or indexed by an earlier try
    await _move(row, SourceStatus.INDEXING)
    try:
        documents = await _read(job.services, row)
        pieces = [
            (position, title, url, text)
            for position, (title, url, text) in enumerate(
                (t, u, piece) for t, u, body in documents for piece in chunk(body)
            )
        ]
        if not pieces:
            raise Failed("no text found in it")
        vectors = await embeddings.embed_texts(
            job.services, row.tenant_id, [text for _, _, _, text in pieces]
        )
    except (Failed, Unreadable, UnsafeDestination) as exc:
        reason = exc.reason if isinstance(exc, UnsafeDestination) else str(exc)
        await _move(row, SourceStatus.FAILED, reason=f"refused: {reason}"[:500])
        return
    except ProviderError as err:
        if err.retryable and not job.is_last_attempt:
            raise
        await _move(row, SourceStatus.FAILED, reason=f"{err.provider}: {err.message}"[:500])
        return
    async with in_transaction() as conn:
        still = await KnowledgeSource.filter(id=row.id).using_db(conn).select_for_update().first()
        if still is None:
            return  # removed while it was being read: nothing to keep
        await KnowledgeChunk.filter(source_id=row.id).using_db(conn).delete()
        await KnowledgeChunk.bulk_create(
            [
                KnowledgeChunk(
                    tenant_id=row.tenant_id,
                    source_id=row.id,
                    position=position,
                    title=(title or row.title)[:300],
                    url=url,
                    text=text,
                    embedding=embeddings.pack(vector),
                )
                for (position, title, url, text), vector in zip(pieces, vectors, strict=True)
            ],
            batch_size=200,
            using_db=conn,
        )
        first_title = documents[0][0] if documents and row.kind == SourceKind.URL.value else ""
        await KnowledgeSource.filter(id=row.id).using_db(conn).update(
            status=SourceStatus.READY.value, reason=None, chunk_count=len(pieces),
            indexed_at=now(),
            **({"title": first_title[:300]} if first_title and row.title == row.url else {}),
        )  # fmt: skip
        row.status = SourceStatus.READY.value
        await emit(row.tenant_id, "knowledge.source_changed", _event(row), connection=conn)


async def _read(services: Services, row: KnowledgeSource) -> list[tuple[str, str | None, str]]:
    """The source's documents: (title, url, text) each."""
    if row.kind == SourceKind.URL.value:
        assert row.url is not None
        got = await fetch(provider_registry(services).http(WEB), row.url, tenant_id=row.tenant_id)
        found: Extracted = extract(got.content_type, got.body)
        return [(found.title or row.title, got.url, found.text)]
    if row.kind == SourceKind.DOCUMENT.value:
        file = await File.get_or_none(id=row.file_id, tenant_id=row.tenant_id)
        if file is None:
            raise Failed("its file was deleted")
        data = await storage_of(services).read(file.storage_key)
        found = extract(file.content_type, data)
        return [(row.title, None, found.text)]  # the given title, else the file's name
    connection = await NotionConnection.get_or_none(
        id=row.notion_connection_id, tenant_id=row.tenant_id
    )
    if connection is None or not connection.active:
        raise Failed("its Notion connection is gone or inactive")
    client = client_for(
        services, key_of(services.settings, connection), labels={"tenant_id": str(row.tenant_id)}
    )
    try:
        return await _notion_pages(client, connection.database_id)
    except ProviderError as err:
        if err.is_auth_error or err.is_caller_error:
            raise Failed(f"Notion refused it ({err.vendor_code or err.status})") from None
        raise


_TEXT_BLOCKS = frozenset({
    "paragraph", "heading_1", "heading_2", "heading_3", "bulleted_list_item",
    "numbered_list_item", "to_do", "quote", "callout", "toggle", "code",
})  # fmt: skip


def _rich(items: Any) -> str:
    if not isinstance(items, list):
        return ""
    return "".join(str(t.get("plain_text", "")) for t in items if isinstance(t, dict))


async def _notion_pages(
    client: NotionClient, database_id: str
) -> list[tuple[str, str | None, str]]:
    pages: list[dict[str, Any]] = []
    cursor = None
    while len(pages) < MAX_NOTION_PAGES:
        batch = await client.query_database(database_id, start_cursor=cursor)
        pages += [p for p in batch.get("results") or [] if isinstance(p, dict)]
        if not batch.get("has_more") or not batch.get("next_cursor"):
            break
        cursor = batch["next_cursor"]
    out = []
    for page in pages[:MAX_NOTION_PAGES]:
        props = page.get("properties") if isinstance(page.get("properties"), dict) else {}
        title, lines = "", []
        for name, value in (props or {}).items():
            if not isinstance(value, dict):
                continue
            kind = value.get("type")
            if kind == "title":
                title = _rich(value.get("title"))
            elif kind == "rich_text" and _rich(value.get("rich_text")):
                lines.append(f"{name}: {_rich(value.get('rich_text'))}")
        blocks: list[dict[str, Any]] = []
        start = None
        while len(blocks) < MAX_NOTION_BLOCKS:
            got = await client.block_children(str(page["id"]), start_cursor=start)
            blocks += [b for b in got.get("results") or [] if isinstance(b, dict)]
            if not got.get("has_more") or not got.get("next_cursor"):
                break
            start = got["next_cursor"]
        for block in blocks:
            kind = block.get("type")
            if kind in _TEXT_BLOCKS and isinstance(block.get(kind), dict):
                lines.append(_rich(block[kind].get("rich_text")))
        text = "\n\n".join([title, *lines]).strip()
        if text:
            out.append((title, str(page.get("url") or "") or None, text))
    return out
