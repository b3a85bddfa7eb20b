from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('switchboard', '0010_payments')]

    initial = False

    operations = [
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
    ]
