from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

# Full-text search over knowledge chunks, each store its own (outside the model):
# SQLite an external-content FTS5 table with porter stemming, kept in step by triggers;
# PostgreSQL a generated tsvector column (english) with a GIN index.
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE knowledge_chunks_fts USING fts5("
    "text, content='knowledge_chunks', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER knowledge_chunks_ai AFTER INSERT ON knowledge_chunks BEGIN "
    "INSERT INTO knowledge_chunks_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER knowledge_chunks_ad AFTER DELETE ON knowledge_chunks BEGIN "
    "INSERT INTO knowledge_chunks_fts(knowledge_chunks_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER knowledge_chunks_au AFTER UPDATE OF text ON knowledge_chunks BEGIN "
    "INSERT INTO knowledge_chunks_fts(knowledge_chunks_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); "
    "INSERT INTO knowledge_chunks_fts(rowid, text) VALUES (new.id, new.text); END",
]
SQLITE_FTS_DROP = [
    "DROP TRIGGER IF EXISTS knowledge_chunks_au",
    "DROP TRIGGER IF EXISTS knowledge_chunks_ad",
    "DROP TRIGGER IF EXISTS knowledge_chunks_ai",
    "DROP TABLE IF EXISTS knowledge_chunks_fts",
]
POSTGRES_FTS = [
    "ALTER TABLE knowledge_chunks ADD COLUMN tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED",
    "CREATE INDEX knowledge_chunks_tsv ON knowledge_chunks USING GIN (tsv)",
]
POSTGRES_FTS_DROP = [
    "DROP INDEX IF EXISTS knowledge_chunks_tsv",
    "ALTER TABLE knowledge_chunks DROP COLUMN IF EXISTS tsv",
]


async def _run(schema_editor, sqlite, postgres):
    client = schema_editor.client
    dialect = client.capabilities.dialect
    for sql in sqlite if dialect == "sqlite" else postgres:
        await client.execute_script(sql)


async def full_text_search(apps, schema_editor):
    await _run(schema_editor, SQLITE_FTS, POSTGRES_FTS)


async def drop_full_text_search(apps, schema_editor):
    await _run(schema_editor, SQLITE_FTS_DROP, POSTGRES_FTS_DROP)


class Migration(migrations.Migration):
    dependencies = [('switchboard', '0012_meetings')]

    initial = False

    operations = [
        ops.CreateModel(
            name='KnowledgeSource',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharField(max_length=16)),
                ('title', fields.CharField(default='', max_length=300)),
                ('url', fields.CharField(null=True, max_length=2000)),
                ('file_id', fields.BigIntField(null=True)),
                ('notion_connection_id', fields.BigIntField(null=True)),
                ('status', fields.CharField(default='PENDING', db_index=True, max_length=16)),
                ('reason', fields.CharField(null=True, max_length=500)),
                ('chunk_count', fields.IntField(default=0)),
                ('content_type', fields.CharField(default='', max_length=127)),
                ('indexed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_by_id', fields.BigIntField(null=True)),
            ],
            options={'table': 'knowledge_sources', 'app': 'switchboard', 'pk_attr': 'id'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='KnowledgeChunk',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('source', fields.ForeignKeyField('switchboard.KnowledgeSource', source_field='source_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('position', fields.IntField()),
                ('title', fields.CharField(default='', max_length=300)),
                ('url', fields.CharField(null=True, max_length=2000)),
                ('text', fields.TextField(unique=False)),
                ('embedding', fields.BinaryField(null=True)),
            ],
            options={'table': 'knowledge_chunks', 'app': 'switchboard', 'indexes': [Index(fields=['source_id', 'position'])], 'pk_attr': 'id'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='NotionConnection',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('user', fields.ForeignKeyField('switchboard.User', source_field='user_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('api_key', fields.TextField(unique=False)),
                ('key_hint', fields.CharField(default='', max_length=8)),
                ('database_id', fields.CharField(max_length=36)),
                ('database_title', fields.CharField(default='', max_length=300)),
                ('workspace_name', fields.CharField(default='', max_length=300)),
                ('active', fields.BooleanField(default=True)),
                ('inactive_reason', fields.CharField(null=True, max_length=500)),
            ],
            options={'table': 'notion_connections', 'app': 'switchboard', 'unique_together': (('tenant_id', 'user_id'),), 'pk_attr': 'id', 'table_description': "One user's Notion: their integration key (a vault token, never returned) and the"},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='NotionContactPage',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('connection', fields.ForeignKeyField('switchboard.NotionConnection', source_field='connection_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('contact', fields.ForeignKeyField('switchboard.Contact', source_field='contact_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('page_id', fields.CharField(null=True, max_length=36)),
                ('contact_updated_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'notion_contact_pages', 'app': 'switchboard', 'unique_together': (('connection_id', 'contact_id'),), 'pk_attr': 'id', 'table_description': "The Notion page a contact was written to through one connection, and the contact's"},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='NotionSync',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('connection', fields.ForeignKeyField('switchboard.NotionConnection', source_field='connection_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('status', fields.CharField(default='QUEUED', max_length=16)),
                ('full', fields.BooleanField(default=False)),
                ('total', fields.IntField(default=0)),
                ('created', fields.IntField(default=0)),
                ('updated', fields.IntField(default=0)),
                ('failed', fields.IntField(default=0)),
                ('reason', fields.CharField(null=True, max_length=500)),
                ('started_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'notion_syncs', 'app': 'switchboard', 'indexes': [Index(fields=['connection_id', 'status'])], 'pk_attr': 'id', 'table_description': 'One run of the contact sync of a connection, with its counts as it goes.'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='NotionSyncError',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('tenant', fields.ForeignKeyField('switchboard.Tenant', source_field='tenant_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('sync', fields.ForeignKeyField('switchboard.NotionSync', source_field='sync_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('contact_id', fields.BigIntField()),
                ('message', fields.CharField(max_length=500)),
            ],
            options={'table': 'notion_sync_errors', 'app': 'switchboard', 'pk_attr': 'id', 'table_description': 'A contact Notion refused during a sync (the others went on).'},
            bases=['TenantModel'],
        ),
        ops.RunPython(full_text_search, drop_full_text_search),
    ]
