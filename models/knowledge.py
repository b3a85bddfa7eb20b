"""The knowledge base the AI answers from: a tenant's sources (a URL, an uploaded
document, the pages of a connected Notion database) and their text in chunks.

Each chunk keeps its position in its source, the title and URL it came from (a Notion
source has one per page), and its embedding as float32 bytes (little-endian, 4 bytes a
dimension). Full-text search is the store's own, kept by migration 0013 outside the
model: SQLite an FTS5 table `knowledge_chunks_fts` (porter stemming) fed by triggers,
PostgreSQL a generated `tsv` column (english) with a GIN index."""

from enum import StrEnum

from tortoise import fields
from tortoise.backends.base.client import BaseDBAsyncClient

from models.base import TenantModel


class SourceKind(StrEnum):
    URL = "URL"
    DOCUMENT = "DOCUMENT"
    NOTION = "NOTION"


class SourceStatus(StrEnum):
    PENDING = "PENDING"
    INDEXING = "INDEXING"
    READY = "READY"
    FAILED = "FAILED"


class KnowledgeSource(TenantModel):
    kind = fields.CharField(max_length=16)
    title = fields.CharField(max_length=300, default="")
    url = fields.CharField(max_length=2000, null=True)  # URL sources
    file_id = fields.BigIntField(null=True)  # DOCUMENT sources (models.files.File)
    notion_connection_id = fields.BigIntField(null=True)  # NOTION sources
    status = fields.CharField(max_length=16, default=SourceStatus.PENDING.value, db_index=True)
    reason = fields.CharField(max_length=500, null=True)  # why it FAILED
    chunk_count = fields.IntField(default=0)
    content_type = fields.CharField(max_length=127, default="")
    indexed_at = fields.DatetimeField(null=True)
    created_by_id = fields.BigIntField(null=True)

    class Meta:
        table = "knowledge_sources"


class KnowledgeChunk(TenantModel):
    source: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "switchboard.KnowledgeSource", related_name=False, on_delete=fields.CASCADE
    )
    source_id: int
    position = fields.IntField()  # 0-based, in reading order within the source
    title = fields.CharField(max_length=300, default="")
    url = fields.CharField(max_length=2000, null=True)
    text = fields.TextField()
    embedding = fields.BinaryField(null=True)  # float32 little-endian

    class Meta:
        table = "knowledge_chunks"
        indexes = (("source_id", "position"),)


# The full-text index, as migration 0013 builds it (the migration keeps its own copy, as
# migrations do); `install_search_index` builds it on a store made straight from the
# models (`generate_schemas`: tests, benchmarks).
SEARCH_INDEX: dict[str, list[str]] = {
    "sqlite": [
        "CREATE VIRTUAL TABLE IF NOT EXISTS knowledge_chunks_fts USING fts5("
        "text, content='knowledge_chunks', content_rowid='id', tokenize='porter unicode61')",
        "CREATE TRIGGER IF NOT EXISTS knowledge_chunks_ai AFTER INSERT ON knowledge_chunks "
        "BEGIN INSERT INTO knowledge_chunks_fts(rowid, text) VALUES (new.id, new.text); END",
        "CREATE TRIGGER IF NOT EXISTS knowledge_chunks_ad AFTER DELETE ON knowledge_chunks "
        "BEGIN INSERT INTO knowledge_chunks_fts(knowledge_chunks_fts, rowid, text) "
        "VALUES ('delete', old.id, old.text); END",
        "CREATE TRIGGER IF NOT EXISTS knowledge_chunks_au AFTER UPDATE OF text ON "
        "knowledge_chunks BEGIN INSERT INTO knowledge_chunks_fts(knowledge_chunks_fts, rowid, "
        "text) VALUES ('delete', old.id, old.text); "
        "INSERT INTO knowledge_chunks_fts(rowid, text) VALUES (new.id, new.text); END",
    ],
    "postgres": [
        "ALTER TABLE knowledge_chunks ADD COLUMN IF NOT EXISTS tsv tsvector "
        "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED",
        "CREATE INDEX IF NOT EXISTS knowledge_chunks_tsv ON knowledge_chunks USING GIN (tsv)",
    ],
}


async def install_search_index(conn: BaseDBAsyncClient) -> None:
    for sql in SEARCH_INDEX[conn.capabilities.dialect]:
        await conn.execute_script(sql)
